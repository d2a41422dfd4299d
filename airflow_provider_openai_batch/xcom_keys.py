"""The XCom keys the operators and the sensor push, in one place (the extra link reads one of them)."""

from __future__ import annotations

__all__ = [
    "XCOM_BATCH",
    "XCOM_BATCH_ID",
    "XCOM_BATCH_IDS",
    "XCOM_COST",
    "XCOM_ERROR_FILE_ID",
    "XCOM_ESTIMATE",
    "XCOM_MANIFEST",
    "XCOM_OUTPUT_FILE_ID",
]

#: The batch id, pushed the moment it is known (before any waiting), so the extra link works while deferred.
XCOM_BATCH_ID = "batch_id"
#: The batch's output file id (``None`` when it has none).
XCOM_OUTPUT_FILE_ID = "output_file_id"
#: The batch's error file id (``None`` when it has none).
XCOM_ERROR_FILE_ID = "error_file_id"
#: The compact summary of the terminal batch: status, request counts, usage, errors, timestamps.
XCOM_BATCH = "batch"
#: Tokens and USD at batch prices (see :mod:`~airflow_provider_openai_batch.pricing`); ``None`` without usage.
XCOM_COST = "cost"
#: The pre-flight estimate of an input's tokens and cost (a ``CostEstimate.to_dict()``).
XCOM_ESTIMATE = "estimate"
#: The job's shard batch ids, pushed as soon as every shard batch exists (again as more are submitted).
XCOM_BATCH_IDS = "batch_ids"
#: The job's manifest (also its return value), pushed on failure too.
XCOM_MANIFEST = "manifest"
