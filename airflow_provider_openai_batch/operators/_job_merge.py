"""The Job operator's merge: every shard batch's results into the job's two files, logged."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.collect import MergedJob
    from airflow_provider_openai_batch.job.merge import Overdue
    from airflow_provider_openai_batch.job.plan import JobPlan
    from airflow_provider_openai_batch.models import Batch

__all__ = ["merge_job"]


def merge_job(
    plan: JobPlan,
    batches: Mapping[str, Batch],
    *,
    hook: OpenAIBatchHook,
    input_file: Any,
    destination: Any,
    log: logging.Logger | Any,
    retry_dir: Path | None = None,
    overdue: Overdue | None = None,
) -> MergedJob:
    """Merge the job's results in input order at ``destination`` (see :func:`..job.collect.collect_results`).

    :param plan: the job's plan; every shard has its terminal batch in ``batches``.
    :param batches: the shard batches by id.
    :param hook: downloads the result files.
    :param input_file: the job's input as the operator was given it (read again for input order).
    :param destination: where the merged files go.
    :param log: the task's logger.
    :param retry_dir: where to write the lines to resubmit, ``None`` when no round follows.
    :param overdue: what the job's deadline left unrun, ``None`` when it was not hit.
    """
    from airflow_provider_openai_batch.job.collect import collect_results
    from airflow_provider_openai_batch.operators.input_file import InputFile

    source = InputFile(input_file)
    merged = collect_results(
        plan,
        batches,
        download=hook.download_file,
        open_input=source.open,
        input_name=source.name,
        destination=destination,
        retry_dir=retry_dir,
        overdue=overdue,
    )
    stats = merged.stats
    log.info(
        "Merged %d result file(s) in input order: %d answered, %d failed or unanswered (%d missing); "
        "download %.1fs, merge %.1fs",
        merged.result_files,
        stats.output_lines,
        stats.error_lines,
        stats.missing,
        merged.download_seconds,
        merged.merge_seconds,
    )
    if stats.unexpected:
        log.warning("%d result line(s) matched no input line and were left out", stats.unexpected)
    return merged
