"""What a batch's state means for the task waiting on it: the one place that decides.

The sensor, the trigger's event handling and the operators all call :func:`judge_batch`; none keeps its
own list of statuses. Pure logic: no Airflow and no HTTP imports, so it is cheap and easy to test.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from airflow_provider_openai_batch.error_codes import CAPACITY_ERROR_CODES
from airflow_provider_openai_batch.models import Batch, BatchErrors, BatchStatus

__all__ = [
    "CAPACITY_ERROR_CODES",
    "BatchOutcome",
    "FailedRequestsPolicy",
    "Verdict",
    "describe_progress",
    "is_capacity_failure",
    "judge_batch",
]


def is_capacity_failure(errors: BatchErrors | None) -> bool:
    """True when a ``failed`` batch failed only for capacity: every error with a code has a capacity code."""
    codes = {error.code for error in (errors.data if errors else ()) if error.code}
    return bool(codes) and codes <= CAPACITY_ERROR_CODES


class Verdict(str, enum.Enum):
    """What the waiting task should do next."""

    WAIT = "wait"
    SUCCEED = "succeed"
    FAIL = "fail"


@dataclass(frozen=True)
class FailedRequestsPolicy:
    """How many failed requests a ``completed`` batch may contain before the task fails.

    :param limit: ``None`` accepts any number (but never *all* requests failed); an ``int`` is the
        largest accepted count; a ``float`` in ``[0, 1)`` is the largest accepted share of the total.
    """

    limit: int | float | None = None

    def __post_init__(self) -> None:
        limit = self.limit
        if limit is None:
            return
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise ValueError(f"max_failed_requests must be a count (int) or a ratio (float), got {limit!r}")
        if isinstance(limit, int) and limit < 0:
            raise ValueError(f"max_failed_requests as a count must be >= 0, got {limit}")
        if isinstance(limit, float) and not 0.0 <= limit < 1.0:
            raise ValueError(f"max_failed_requests as a ratio must be in [0, 1), got {limit}")

    def exceeded_by(self, failed: int, total: int) -> bool:
        if self.limit is None or failed == 0:
            return False
        if isinstance(self.limit, float):
            return total > 0 and failed / total > self.limit
        return failed > self.limit

    def describe(self) -> str:
        if self.limit is None:
            return "any number"
        if isinstance(self.limit, float):
            return f"{self.limit:.1%}"
        return str(self.limit)


@dataclass(frozen=True)
class BatchOutcome:
    """The verdict on one observation of a batch.

    :param verdict: wait, succeed or fail.
    :param reason: a stable code the caller can branch on (``running``, ``completed``, ``partial``,
        ``failed``, ``expired``, ``cancelled``, ``all_requests_failed``, ``too_many_failed_requests``,
        ``no_output``).
    :param message: a sentence for the log or the task failure, saying what happened and what to do.
    :param retryable: for a failure, whether running the task again may succeed (a capacity failure);
        every other failure would only meet the same batch again.
    """

    batch: Batch
    verdict: Verdict
    reason: str
    message: str
    retryable: bool = False

    @property
    def output_file_id(self) -> str | None:
        return self.batch.output_file_id


def judge_batch(
    batch: Batch,
    *,
    allow_partial: bool = False,
    max_failed_requests: int | float | None = None,
) -> BatchOutcome:
    """Decide what ``batch`` means for a task that waits for it.

    :param allow_partial: accept an ``expired`` or ``cancelled`` batch that kept some results.
    :param max_failed_requests: see :class:`FailedRequestsPolicy`.
    """
    policy = FailedRequestsPolicy(max_failed_requests)
    status = batch.status
    counts = batch.request_counts
    tally = f"{counts.completed} completed, {counts.failed} failed of {counts.total}"
    if not status.is_terminal:
        return BatchOutcome(batch, Verdict.WAIT, "running", describe_progress(batch))
    if status is BatchStatus.FAILED:
        errors = batch.errors.summary() if batch.errors and batch.errors.data else "  (the API gave no details)"
        if is_capacity_failure(batch.errors):
            return BatchOutcome(
                batch,
                Verdict.FAIL,
                "capacity",
                f"Batch {batch.id} failed: the organization's batch queue for this model was full when it was "
                "validated (enqueued token or request limit). The input is fine and no request was run. A new try "
                "of the task that creates the batch creates a new one (the create operator's own retries do this); "
                "if it keeps happening, run fewer batches for this model at once (lower max_active_tis_per_dag or "
                f"pool slots), split the input, or ask OpenAI for a higher batch queue limit:\n{errors}",
                retryable=True,
            )
        return BatchOutcome(
            batch,
            Verdict.FAIL,
            "failed",
            f"Batch {batch.id} failed validation; no request was run. Fix the input file and run again:\n{errors}",
        )
    if status.may_have_partial_output:
        verb = "expired before finishing (24h window)" if status is BatchStatus.EXPIRED else "was cancelled"
        if not allow_partial:
            return BatchOutcome(
                batch,
                Verdict.FAIL,
                status.value,
                f"Batch {batch.id} {verb}: {tally}. Partial results: output file {batch.output_file_id}, "
                f"error file {batch.error_file_id}. Set allow_partial=True to accept partial results.",
            )
        if not batch.output_file_id or counts.completed == 0:
            return BatchOutcome(
                batch, Verdict.FAIL, "no_output", f"Batch {batch.id} {verb} with no completed request ({tally})."
            )
        return BatchOutcome(
            batch, Verdict.SUCCEED, "partial", f"Batch {batch.id} {verb}; accepting partial results: {tally}."
        )
    # completed
    if counts.total > 0 and counts.failed >= counts.total:
        return BatchOutcome(
            batch,
            Verdict.FAIL,
            "all_requests_failed",
            f"Batch {batch.id} completed but every request failed ({tally}); see error file "
            f"{batch.error_file_id} for the per-request errors.",
        )
    if policy.exceeded_by(counts.failed, counts.total):
        return BatchOutcome(
            batch,
            Verdict.FAIL,
            "too_many_failed_requests",
            f"Batch {batch.id} completed with {counts.failed} failed requests of {counts.total}, more than "
            f"max_failed_requests={policy.describe()}; see error file {batch.error_file_id}.",
        )
    note = f"; per-request errors in {batch.error_file_id}" if counts.failed else ""
    return BatchOutcome(batch, Verdict.SUCCEED, "completed", f"Batch {batch.id} completed: {tally}{note}.")


def describe_progress(batch: Batch, *, now: float | None = None) -> str:
    """One log line: status, completed/failed/total, percent and elapsed time."""
    counts = batch.request_counts
    elapsed = ""
    if batch.created_at:
        seconds = int((now if now is not None else time.time()) - batch.created_at)
        hours, rest = divmod(max(seconds, 0), 3600)
        elapsed = f", elapsed {hours}h{rest // 60:02d}m{rest % 60:02d}s"
    return (
        f"Batch {batch.id}: {batch.status.value}, {counts.completed} completed / {counts.failed} failed / "
        f"{counts.total} total ({counts.percent_done:.1f}%){elapsed}"
    )
