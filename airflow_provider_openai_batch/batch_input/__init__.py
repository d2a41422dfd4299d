"""Build, check and read the JSONL files of a batch, before and after the API sees them.

A batch input that breaks a rule is only rejected by the API after upload and validation, minutes
later and with terse messages. :func:`validate_batch_input` applies the same rules locally, in one
streaming pass with small, constant memory (a 200 MB file is never held in memory), and reports every
problem with its line number and a code. :func:`write_batch_input` builds a file from requests with the
same checks and never leaves a half-written file behind. :func:`read_results` and
:func:`iter_results` turn output and error files back into :class:`BatchResult` objects keyed by
``custom_id``.

The endpoints themselves (names, what each body holds) are the registry in
:mod:`airflow_provider_openai_batch.endpoints`. One module per job here: ``limits`` (per-file limits),
``records`` (``BatchRequest``,
``InputSummary``), ``checker`` (the line rules), ``reading`` (streaming lines, counting them),
``validate``, ``write``, ``build`` (request builders) and ``results``.

Only the standard library is imported here: DAG files import this package while being parsed.
"""

from __future__ import annotations

from airflow_provider_openai_batch.batch_input.build import (
    build_chat_requests,
    build_embedding_requests,
    build_responses_requests,
)
from airflow_provider_openai_batch.batch_input.checker import RequestCallback
from airflow_provider_openai_batch.batch_input.limits import MAX_INPUT_BYTES, MAX_REQUESTS
from airflow_provider_openai_batch.batch_input.reading import STORAGE_BLOCK_SIZE, LineCounter, count_lines, iter_lines
from airflow_provider_openai_batch.batch_input.records import BatchRequest, InputSummary
from airflow_provider_openai_batch.batch_input.results import BatchResult, iter_results, iter_results_file, read_results
from airflow_provider_openai_batch.batch_input.validate import validate_batch_input
from airflow_provider_openai_batch.batch_input.write import write_batch_input
from airflow_provider_openai_batch.endpoints import CHAT_COMPLETIONS, EMBEDDINGS, RESPONSES, normalize_endpoint

__all__ = [
    "CHAT_COMPLETIONS",
    "EMBEDDINGS",
    "MAX_INPUT_BYTES",
    "MAX_REQUESTS",
    "RESPONSES",
    "STORAGE_BLOCK_SIZE",
    "BatchRequest",
    "BatchResult",
    "InputSummary",
    "LineCounter",
    "RequestCallback",
    "build_chat_requests",
    "build_embedding_requests",
    "build_responses_requests",
    "count_lines",
    "iter_lines",
    "iter_results",
    "iter_results_file",
    "normalize_endpoint",
    "read_results",
    "validate_batch_input",
    "write_batch_input",
]
