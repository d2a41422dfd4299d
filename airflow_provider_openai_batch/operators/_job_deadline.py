"""The Job operator's deadline before anything is sent: resolved from the rendered argument, refused when past.

What is due once the job runs is decided by :mod:`~airflow_provider_openai_batch.job.decide`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_openai_batch.job.plan import JobDeadline

__all__ = ["refuse_past", "resolve_job_deadline"]


def resolve_job_deadline(
    context: Any,
    value: object,
    on_deadline: str,
    *,
    log: logging.Logger | Any,
    dry_run: bool = False,
    now: float | None = None,
) -> JobDeadline | None:
    """The rendered ``deadline`` resolved to a moment (a duration counts from the DAG run's start), or ``None``.

    :raises ValueError: for a value that is no deadline (named), before anything is uploaded.
    :raises AirflowFailException: when it has passed already on the task's first try (not for a dry run); a
        later try first looks for the batches an earlier one made (:func:`refuse_past` after the split).
    """
    from airflow_provider_openai_batch.idempotency import look_back
    from airflow_provider_openai_batch.job.deadline import deadline_anchor, describe_deadline, resolve_deadline
    from airflow_provider_openai_batch.job.plan import JobDeadline

    now = time.time() if now is None else now
    at = resolve_deadline(value, anchor=deadline_anchor(context, now))
    if at is None:
        return None
    deadline = JobDeadline(at=at, on_deadline=on_deadline)
    log.info("Deadline: %s (on_deadline=%r)", describe_deadline(at), on_deadline)
    if not look_back(context).needed:
        refuse_past(deadline, dry_run=dry_run, now=now)
    return deadline


def refuse_past(
    deadline: JobDeadline,
    *,
    dry_run: bool = False,
    earlier: Callable[[], Sequence[str]] | None = None,
    now: float | None = None,
) -> None:
    """Fail, before anything is uploaded, when the deadline has passed already.

    :param earlier: cancels the input's shard batches an earlier try of the task left running, and returns
        their ids (called only when the deadline has passed).
    :param now: epoch seconds now (default: the clock).
    """
    from airflow_provider_openai_batch.job.deadline import describe_deadline

    now = time.time() if now is None else now
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
