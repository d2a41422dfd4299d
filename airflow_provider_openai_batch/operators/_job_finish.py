"""The Job operator's last step: the cost, then the merge of every shard's results (or the next resubmission
round), the verdict and the manifest. The task's own settings are read from the operator it is given."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowFailException
from airflow_provider_openai_batch.budget import report_cost
from airflow_provider_openai_batch.outcome import Verdict
from airflow_provider_openai_batch.xcom_keys import XCOM_COST, XCOM_MANIFEST

if TYPE_CHECKING:
    from airflow_provider_openai_batch.job.collect import MergedJob
    from airflow_provider_openai_batch.job.plan import JobPlan
    from airflow_provider_openai_batch.job.verdict import JobOutcome
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

__all__ = ["finish_job", "judge"]

#: ``(context, plan, batches, merged, work)``: submit the next resubmission round and wait for it.
Resubmit = Callable[[Any, "JobPlan", "dict[str, Batch]", "MergedJob", Path], "dict[str, Any]"]
#: Error codes of lines that never ran: an expired or cancelled shard whose lines all ran later is no failure.
_UNRUN = ("batch_expired", "batch_cancelled", "deadline_exceeded")


def judge(
    task: OpenAIBatchJobOperator,
    plan: JobPlan,
    batches: Mapping[str, Batch],
    answered: int | None = None,
    unfinished: int | None = None,
) -> JobOutcome:
    """The job's verdict under the task's ``allow_partial`` and ``max_failed_requests``."""
    from airflow_provider_openai_batch.job.verdict import judge_plan

    return judge_plan(
        plan,
        batches,
        answered=answered,
        unfinished=unfinished,
        allow_partial=task.allow_partial,
        max_failed_requests=task.max_failed_requests,
    )


def finish_job(
    task: OpenAIBatchJobOperator,
    context: Any,
    plan: JobPlan,
    batches: dict[str, Batch],
    *,
    resubmit: Resubmit,
) -> dict[str, Any]:
    """Push the cost; fail at once when a shard failed; else merge, submit the next round when one is due,
    or judge the job and push (and return) its manifest.

    :raises AirflowFailException: when the job fails (the manifest is pushed first).
    """
    from airflow_provider_openai_batch.job.deadline import past_deadline
    from airflow_provider_openai_batch.job.manifest import build_manifest

    ti = context["ti"]
    shard_batches = [(shard, batches.get(shard.batch_id or "")) for shard in plan.shards]
    usages = [(batch.model or shard.model, batch.usage) for shard, batch in shard_batches if batch is not None]
    ti.xcom_push(key=XCOM_COST, value=report_cost(task, usages, task.price_table))
    first = judge(task, plan, batches)
    capacity = {"enqueued_limits": task.enqueued_limits.to_dict() if task.enqueued_limits.is_set else None}
    if first.reason == "shard_failed":  # nothing to merge while the other shards may still run
        manifest = build_manifest(
            plan, batches, output=None, error=None, stats=None, verdict="fail", reason=first.reason, **capacity
        )
        ti.xcom_push(key=XCOM_MANIFEST, value=manifest)
        raise AirflowFailException(first.message)
    with tempfile.TemporaryDirectory(prefix="openai-batch-resubmit-") as work:
        again = plan.rounds < task.max_resubmits and not past_deadline(plan, now=time.time(), log=task.log)
        merged = _merge(task, plan, batches, retry_dir=Path(work) if again else None)
        if again and merged.stats.retry_lines:
            return resubmit(context, plan, batches, merged, Path(work))
    output, error, stats = merged.output, merged.error, merged.stats
    unfinished = sum(stats.error_codes.get(code, 0) for code in _UNRUN)
    outcome = judge(task, plan, batches, answered=stats.output_lines, unfinished=unfinished)
    verdict = "fail" if outcome.verdict is Verdict.FAIL else "succeed"
    manifest = build_manifest(
        plan, batches, output=output, error=error, stats=stats, verdict=verdict, reason=outcome.reason, **capacity
    )
    ti.xcom_push(key=XCOM_MANIFEST, value=manifest)
    files = f" Merged output: {output['path']}" + (f"; errors: {error['path']}" if error else "")
    if outcome.verdict is Verdict.FAIL:
        raise AirflowFailException(outcome.message + files)
    task.log.info("%s%s", outcome.message, files)
    return manifest


def _merge(
    task: OpenAIBatchJobOperator, plan: JobPlan, batches: Mapping[str, Batch], retry_dir: Path | None
) -> MergedJob:
    """Every shard's results merged in input order at the task's destination (see :mod:`..job.collect`), logged.

    :param retry_dir: where to write the lines to resubmit, ``None`` when no round follows.
    """
    from airflow_provider_openai_batch.job.collect import collect_results
    from airflow_provider_openai_batch.job.deadline import overdue
    from airflow_provider_openai_batch.operators.input_file import InputFile

    source = InputFile(task.input_file)
    merged = collect_results(
        plan,
        batches,
        download=task.hook.download_file,
        open_input=source.open,
        input_name=source.name,
        destination=task.destination,
        retry_dir=retry_dir,
        overdue=overdue(plan),
    )
    stats = merged.stats
    task.log.info(
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
        task.log.warning("%d result line(s) matched no input line and were left out", stats.unexpected)
    return merged
