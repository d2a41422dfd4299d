"""The Job operator's side of its deadline: cancel the job's running batches, record it, fail when asked to.

What is due is decided by :mod:`~airflow_provider_openai_batch.job.deadline` (pure); this module does the I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowFailException
from airflow_provider_openai_batch.xcom_keys import XCOM_MANIFEST

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.deadline import DeadlineStep
    from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators._job_submit import ShardSubmitter

__all__ = ["cancel_earlier_shards", "meet_deadline", "refuse_past", "resolve_job_deadline"]


def resolve_job_deadline(
    context: Any, value: object, on_deadline: str, *, log: logging.Logger | Any, dry_run: bool = False
) -> JobDeadline | None:
    """The rendered ``deadline`` resolved to a moment (a duration counts from the DAG run's start), or ``None``.

    :raises ValueError: for a value that is no deadline (named), before anything is uploaded.
    :raises AirflowFailException: when it has passed already on the task's first try (not for a dry run); a
        later try first looks for the batches an earlier one made (:func:`refuse_past` after the split).
    """
    from airflow_provider_openai_batch.idempotency import look_back
    from airflow_provider_openai_batch.job.deadline import deadline_anchor, describe_deadline, resolve_deadline
    from airflow_provider_openai_batch.job.plan import JobDeadline

    at = resolve_deadline(value, anchor=deadline_anchor(context))
    if at is None:
        return None
    deadline = JobDeadline(at=at, on_deadline=on_deadline)
    log.info("Deadline: %s (on_deadline=%r)", describe_deadline(at), on_deadline)
    if not look_back(context).needed:
        refuse_past(deadline, dry_run=dry_run)
    return deadline


def refuse_past(
    deadline: JobDeadline, *, dry_run: bool = False, earlier: Callable[[], Sequence[str]] | None = None
) -> None:
    """Fail, before anything is uploaded, when the deadline has passed already.

    :param earlier: cancels the input's shard batches an earlier try of the task left running, and returns
        their ids (called only when the deadline has passed).
    """
    from airflow_provider_openai_batch.job.deadline import describe_deadline

    now = time.time()
    if now < deadline.at or dry_run:
        return
    cancelled = earlier() if earlier is not None else ()
    left = (
        f" It cancelled {len(cancelled)} batch(es) an earlier try left running: {', '.join(cancelled)}."
        if cancelled
        else ""
    )
    raise AirflowFailException(
        f"The job's deadline {describe_deadline(deadline.at)} passed {now - deadline.at:.0f}s before it could "
        f"submit anything: nothing was uploaded and no batch was created.{left}"
    )


def cancel_earlier_shards(
    submitter: ShardSubmitter, keys: Sequence[str], *, hook: OpenAIBatchHook, log: logging.Logger | Any
) -> list[str]:
    """Cancel the running shard batches an earlier try made for these keys (found by their tags, as a retry
    finds them to reuse them); returns their ids. A resubmission round's batches are not found this way."""
    cancelled = []
    for batch in submitter.existing(keys).values():
        if batch.status.is_terminal:
            continue
        try:
            hook.cancel_batch(batch.id)
        except Exception as exc:
            log.warning("Deadline: cancelling batch %s an earlier try left running failed: %s", batch.id, exc)
            continue
        log.warning("Deadline passed: cancelled batch %s, which an earlier try left %s", batch.id, batch.status.value)
        cancelled.append(batch.id)
    return cancelled


def meet_deadline(
    context: Any,
    plan: JobPlan,
    batches: dict[str, Batch],
    step: DeadlineStep,
    *,
    hook: OpenAIBatchHook,
    log: logging.Logger | Any,
    enqueued_limits: Mapping[str, Any] | None = None,
) -> tuple[JobPlan, dict[str, Batch]]:
    """Cancel the job's batches ``step`` names and record the deadline as hit in the plan.

    Only this job's own batches are cancelled. A cancel that fails is tried again at the next check (the
    batch stays among those waited for). With ``on_deadline="fail"`` the manifest is pushed and the task
    fails at once, with the counts; with ``"partial"`` the job then waits for the cancelled batches to end.

    :param context: the task's context (XCom).
    :param plan: the job's plan; its deadline has passed.
    :param batches: its batches as last seen, by id (updated with each cancel's answer).
    :param step: what :func:`~airflow_provider_openai_batch.job.deadline.deadline_step` says is due.
    :param hook: the task's hook.
    :param log: the task's logger.
    :param enqueued_limits: the limits admission used, for the manifest.
    :raises AirflowFailException: with ``on_deadline="fail"``.
    """
    from airflow_provider_openai_batch.job.deadline import describe_deadline, mark_hit
    from airflow_provider_openai_batch.job.manifest import build_manifest
    from airflow_provider_openai_batch.models import BatchStatus

    assert plan.deadline is not None
    first = not plan.deadline.hit
    cancelled: list[str] = []
    for batch_id in step.cancel:
        try:
            batch = hook.cancel_batch(batch_id)
        except Exception as exc:
            log.warning("Deadline: cancelling batch %s failed (tried again at the next check): %s", batch_id, exc)
            continue
        batches[batch_id] = batch
        if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            cancelled.append(batch_id)
    plan = mark_hit(plan, now=time.time(), cancelled=tuple(cancelled))
    deadline = plan.deadline
    assert deadline is not None
    answered = sum(batches[b].request_counts.completed for b in plan.batch_ids if b in batches)
    what = (
        f"The job's deadline {describe_deadline(deadline.at)} passed with work unfinished: "
        f"{len(deadline.cancelled)} running batch(es) of the job cancelled ({', '.join(deadline.cancelled) or '-'}), "
        f"{step.not_submitted} shard(s) never submitted; {answered:,} of {plan.requests:,} requests answered so far"
    )
    if deadline.on_deadline == "fail":
        manifest = build_manifest(
            plan,
            batches,
            output=None,
            error=None,
            stats=None,
            verdict="fail",
            reason="deadline_exceeded",
            enqueued_limits=enqueued_limits,
        )
        context["ti"].xcom_push(key=XCOM_MANIFEST, value=manifest)
        raise AirflowFailException(f"{what}. on_deadline='fail': nothing was merged.")
    if first:
        log.warning("%s. on_deadline='partial': waiting for them to end, then merging what exists.", what)
    return plan, batches
