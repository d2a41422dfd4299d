"""The wait decision: what a task that waits for one batch does after each poll.

The trigger (async, in the triggerer), the sensor's ``poke`` and the worker-side poll loop feed every poll
result to a :class:`BatchWaitDecision` and carry out the :class:`Step` it returns: keep waiting (and whether
to log), finished (with the verdict on the batch), or give up (with a message, and whether a retry may help).
The decision lives here, once, so the three cannot drift; they only do I/O. A waiter of many batches, or a
poller shared by many triggers, keeps one decision per batch. :func:`judge_kill` tells a trigger's ``on_kill``
whether its task was killed, or only resumed from another copy of the trigger.

Pure logic: no Airflow and no HTTP imports. Times are plain floats from whatever clock the caller uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, auto

from airflow_provider_openai_batch.exceptions import OpenAIBatchAPIError
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.outcome import BatchOutcome, FailedRequestsPolicy, judge_batch

__all__ = [
    "ENDED",
    "REQUEUED",
    "TAKEN_OFF",
    "BatchWaitDecision",
    "Finished",
    "GiveUp",
    "KeepWaiting",
    "KillVerdict",
    "PollErrorBudget",
    "Step",
    "WaitPolicy",
    "judge_kill",
]


@dataclass(frozen=True)
class WaitPolicy:
    """How an operator waits for a batch and judges it; each waiting operator builds one from its arguments.

    :param poll_interval: seconds between polls.
    :param timeout: seconds the wait may last, ``None`` for as long as the batch runs. When it elapses the
        task fails with retry and the batch is left running (it may still finish; nothing is lost).
    :param cancel_on_kill: cancel the batch when a user kills the waiting task.
    :param allow_partial: accept the partial results of an ``expired`` or ``cancelled`` batch.
    :param max_failed_requests: failed requests a ``completed`` batch may have; see
        :class:`~airflow_provider_openai_batch.outcome.FailedRequestsPolicy`.
    :param max_consecutive_errors: transient poll failures in a row (after the hook's own retries) that are
        tolerated; a long wait must outlive a network blip, but not a revoked key or a deleted batch.
    """

    poll_interval: float = 60.0
    timeout: float | None = None
    cancel_on_kill: bool = False
    allow_partial: bool = False
    max_failed_requests: int | float | None = None
    max_consecutive_errors: int = 10

    def __post_init__(self) -> None:
        if not math.isfinite(self.poll_interval) or self.poll_interval <= 0:
            raise ValueError(f"poll interval must be a positive number of seconds, got {self.poll_interval!r}")
        if self.timeout is not None and not self.timeout >= 0:
            raise ValueError(f"wait timeout must be >= 0 seconds or None, got {self.timeout!r}")
        if isinstance(self.max_consecutive_errors, bool) or self.max_consecutive_errors < 0:
            raise ValueError(f"max_consecutive_errors must be >= 0, got {self.max_consecutive_errors!r}")
        FailedRequestsPolicy(self.max_failed_requests)  # raises on a bad limit, naming it

    def judge(self, batch: Batch) -> BatchOutcome:
        """The verdict on ``batch`` under this policy."""
        return judge_batch(batch, allow_partial=self.allow_partial, max_failed_requests=self.max_failed_requests)


@dataclass(frozen=True)
class KeepWaiting:
    """Poll again after the interval.

    :param batch: the batch the poll returned, ``None`` when the poll failed.
    :param log_progress: the status or the request counts changed since the previous poll, so the
        progress line is worth logging (a day-long wait logs changes only).
    :param warning: something the log should show as a warning (a tolerated poll failure, an unknown status).
    """

    batch: Batch | None = None
    log_progress: bool = False
    warning: str | None = None


@dataclass(frozen=True)
class Finished:
    """The batch is terminal; ``outcome`` says whether the task succeeds or fails, and why."""

    outcome: BatchOutcome

    @property
    def batch(self) -> Batch:
        return self.outcome.batch


@dataclass(frozen=True)
class GiveUp:
    """Stop waiting without a terminal batch.

    :param message: what happened and what to do, for the task failure.
    :param retryable: whether a retry of the task may succeed (transient failures, a timeout) or would only
        meet the same error (401, 404, ...).
    """

    message: str
    retryable: bool


#: What :class:`BatchWaitDecision` returns after each poll.
Step = KeepWaiting | Finished | GiveUp


class PollErrorBudget:
    """Which poll failures a wait tolerates: a bounded run of transient ones, never a permanent one.

    A 24-hour wait must survive a network blip or a 503 storm, but not a revoked key or a deleted batch:
    permanent errors (401, 403, 404, 400, ...) and errors that are not API errors are never tolerated.

    :param max_consecutive: transient failures in a row before giving up; a success resets the count.
    :param consecutive: failures already counted (a resumed wait).
    """

    def __init__(self, max_consecutive: int, *, consecutive: int = 0) -> None:
        if max_consecutive < 0:
            raise ValueError(f"max_consecutive_errors must be >= 0, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.consecutive = consecutive

    def success(self) -> None:
        self.consecutive = 0

    def tolerates(self, error: Exception) -> bool:
        """Record a failure; True when waiting should go on."""
        if not isinstance(error, OpenAIBatchAPIError) or not error.retryable:
            return False
        self.consecutive += 1
        return self.consecutive <= self.max_consecutive

    @property
    def exhausted(self) -> bool:
        """True after the failure that broke the budget (so giving up may be retried, unlike a permanent error)."""
        return self.consecutive > self.max_consecutive


class BatchWaitDecision:
    """Decides, poll after poll, what a task waiting for one batch does; holds the state that needs.

    State: the run of consecutive transient failures (the error budget), the deadline, and the last progress
    seen (status and request counts: data, never log text).

    :param batch_id: the batch, for the messages.
    :param policy: the wait policy.
    :param started_at: when the wait began, on the caller's clock; with ``policy.timeout`` gives the deadline.
    :param consecutive_errors: failures already counted, for a wait that resumes (a sensor rescheduled between
        pokes keeps its count this way).
    """

    def __init__(
        self, batch_id: str, policy: WaitPolicy, *, started_at: float = 0.0, consecutive_errors: int = 0
    ) -> None:
        self.batch_id = batch_id
        self.policy = policy
        self.deadline = started_at + policy.timeout if policy.timeout is not None else None
        self.budget = PollErrorBudget(policy.max_consecutive_errors, consecutive=consecutive_errors)
        # Plain strings and ints, not the models: a wait keeps this across a whole poll interval, and a tuple of
        # atomic values leaves the cyclic collector's lists, so 10,000 waits do not feed its full collections.
        self._last_progress: tuple[str, int, int, int] | None = None

    def on_batch(self, batch: Batch, *, now: float | None = None) -> Step:
        """Decide after a poll returned ``batch``; ``now`` (the caller's clock) is needed only with a timeout."""
        self.budget.success()
        if batch.status.is_terminal:
            return Finished(self.policy.judge(batch))
        counts = batch.request_counts
        progress = (batch.status.value, counts.total, counts.completed, counts.failed)
        changed = progress != self._last_progress
        self._last_progress = progress
        if self._past_deadline(now):
            return GiveUp(self._timeout_message(), retryable=True)
        warning = None
        if changed and not batch.status.is_known:
            warning = (
                f"Batch {batch.id} has status {batch.status.value!r}, which this provider does not know; it is "
                "taken as not finished, so the task keeps waiting."
            )
        return KeepWaiting(batch, log_progress=changed, warning=warning)

    def on_error(self, error: Exception, *, now: float | None = None) -> Step:
        """Decide after a poll raised ``error``.

        Only the API errors that say a later call may succeed (429, 5xx, network) are tolerated, up to
        ``max_consecutive_errors`` in a row; after that the task fails with retry. Anything else (401, 403,
        404, 400, or a bug) ends the wait at once and without retry, which would only meet the same error.
        """
        limit = self.policy.max_consecutive_errors
        if not (isinstance(error, OpenAIBatchAPIError) and error.retryable):
            return GiveUp(f"Stopped waiting for batch {self.batch_id}: {error}", retryable=False)
        if not self.budget.tolerates(error):
            return GiveUp(
                f"Stopped waiting for batch {self.batch_id} after too many consecutive transient failures "
                f"({self.consecutive_errors}, max_consecutive_errors={limit}): {error}",
                retryable=True,
            )
        if self._past_deadline(now):
            return GiveUp(self._timeout_message(), retryable=True)
        return KeepWaiting(
            warning=f"Polling batch {self.batch_id} failed ({self.consecutive_errors}/{limit} in a row, will retry): "
            f"{error}"
        )

    @property
    def consecutive_errors(self) -> int:
        """Transient failures in a row so far (0 after a successful poll)."""
        return self.budget.consecutive

    def _past_deadline(self, now: float | None) -> bool:
        return self.deadline is not None and now is not None and now >= self.deadline

    def _timeout_message(self) -> str:
        return (
            f"Timed out after {self.policy.timeout:.0f}s waiting for batch {self.batch_id}; it is still running and "
            "was not cancelled. Raise the timeout, or wait for it with OpenAIBatchSensor."
        )


class KillVerdict(Enum):
    """What a trigger's ``on_kill`` makes of its task instance as it is now (see :func:`judge_kill`)."""

    #: Cleared, marked or otherwise taken off this try by a user: cancel.
    KILLED = auto()
    #: The same try goes on (a resume, or the task still waits), or nothing can be told: leave the batches alone.
    NOT_KILLED = auto()
    #: Left the deferral by a user's doing, unless another copy of the trigger woke the task: a kill only when
    #: the trigger's own condition to fire does not hold now.
    KILLED_UNLESS_WOKEN = auto()


#: States no resume of the task leads to: it will not run on, by a user's (or the scheduler's) doing.
#: ``"None"`` is a cleared task instance.
TAKEN_OFF = frozenset({"None", "skipped", "upstream_failed", "removed"})
#: States both a user's mark and the task's own end after a resume lead to.
ENDED = frozenset({"success", "failed"})
#: States both a resumed task and one a clear re-queued (in a new try) pass through.
REQUEUED = frozenset({"scheduled", "queued", "running"})


def judge_kill(*, state: str | None, try_number: int | None, deferred_try: int | None) -> KillVerdict:
    """Whether a trigger stopped by Airflow means its task instance was killed, from the task instance now.

    A clear starts a new try (the try number moves on once the scheduler re-queues the task); a resume keeps the
    try. In the same try, ``deferred``, ``scheduled``, ``queued``, ``running``, ``up_for_reschedule`` and
    ``restarting`` are a task that waits on or resumed: not killed. So is ``up_for_retry``: only the resumed
    task failing on its own leads there (no user marks it; Airflow calls no ``on_kill`` on a timed-out
    trigger), and its retry may reuse the batches. ``success`` and ``failed`` are a user's mark or the resumed
    task's own end: killed unless woken. With the try number unknown, ``scheduled``, ``queued`` and ``running``
    may be a resume or a clear the scheduler re-queued: killed unless woken too. An earlier try number than the
    trigger's (only a stale record reads so) counts as unknown.

    :param state: the task instance's state now (``"None"`` once cleared), ``None`` when it is unknown.
    :param try_number: its try number now, ``None`` when it is unknown.
    :param deferred_try: the try number the trigger was deferred under, ``None`` when it is unknown.
    """
    if try_number is not None and deferred_try is not None and try_number > deferred_try:
        return KillVerdict.KILLED  # a later try: cleared (or retried) since
    same_try = try_number is not None and try_number == deferred_try  # an earlier try counts as unknown
    if state in TAKEN_OFF:
        return KillVerdict.KILLED
    if state in ENDED or (state in REQUEUED and not same_try):
        return KillVerdict.KILLED_UNLESS_WOKEN
    return KillVerdict.NOT_KILLED  # the same try goes on, or the state is unknown (or new to this provider)
