"""The one job decision: given what the job has (its plan, its batches, the merge's counts), the clock and the
policy, what it does next. Pure: no Airflow, no HTTP.

The runner in the worker (:mod:`~airflow_provider_openai_batch.operators._job_run`) carries each step out and
asks again; the trigger only polls the batches a :class:`Wait` names and wakes the task. Every rule of a job
lives here, in this order:

1. the deadline: once it has passed with work unfinished, cancel the job's running batches; ``fail`` then ends
   the job, ``partial`` waits for them and merges what exists;
2. capacity: a batch that failed only because the organization's queue was full goes back in the queue after
   a doubling back-off; one that keeps failing so ends the job *retryably*;
3. a batch that failed validation ends the job (its other batches are left running for a retry to find);
4. admission: submit the pending shards that fit under the enqueued limits (all of them when none is set);
5. wait while a batch runs or a shard waits for capacity or its back-off;
6. once every batch has ended, merge every answer of every batch in input order;
7. resubmit the lines that failed for a passing reason, while ``max_resubmits`` allows and the deadline has not
   passed;
8. judge the whole job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from airflow_provider_openai_batch.capacity import EnqueuedLimits
from airflow_provider_openai_batch.job.admission import admit, pending, requeue_capacity_failures
from airflow_provider_openai_batch.job.deadline import deadline_step, describe_deadline, job_wake_at
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.job.verdict import JobOutcome, JobReason, judge_plan
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.outcome import Verdict, is_capacity_failure

__all__ = [
    "Cancel",
    "Finish",
    "JobPolicy",
    "Merge",
    "MergeFacts",
    "Resubmit",
    "Step",
    "Submit",
    "Wait",
    "decide",
]


@dataclass(frozen=True)
class JobPolicy:
    """What the user asked of the job.

    :param max_resubmits: resubmission rounds of one try.
    :param allow_partial: accept expired or cancelled batches that kept some results.
    :param max_failed_requests: failed lines the job may have (a count or a share; ``None``: any short of all).
    :param limits: the enqueued limits shards are admitted under (unset: every due shard at once).
    :param poll_interval: seconds between polls; the base of the capacity back-off and of a failed cancel's retry.
    """

    max_resubmits: int = 0
    allow_partial: bool = False
    max_failed_requests: int | float | None = None
    limits: EnqueuedLimits = field(default_factory=EnqueuedLimits)
    poll_interval: float = 60.0


@dataclass(frozen=True)
class MergeFacts:
    """What the merge of every batch's results counted (line-level facts the decision needs).

    :param answered: input lines with a 2xx answer.
    :param unrun: input lines that never ran (expired, cancelled, missing, stopped by the deadline).
    :param retry_lines: input lines a resubmission round of this try would run again.
    """

    answered: int
    unrun: int
    retry_lines: int


@dataclass(frozen=True)
class Cancel:
    """The deadline has passed: cancel these batches of the job (and give up the shards never submitted)."""

    plan: JobPlan
    batch_ids: tuple[str, ...]
    not_submitted: int


@dataclass(frozen=True)
class Submit:
    """Create the batches of these pending shards now (their files are uploaded first when they are not yet)."""

    plan: JobPlan
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True)
class Wait:
    """Wait on these batches until one ends (``wake_on_finish``), all end, one fails, or ``until`` comes.

    ``batch_ids`` may be empty when only a back-off or the deadline is awaited.
    """

    plan: JobPlan
    batch_ids: tuple[str, ...]
    until: float | None
    wake_on_finish: bool


@dataclass(frozen=True)
class Merge:
    """Every batch has ended: merge every answer of every batch of the job in input order.

    :param resubmit: a resubmission round may follow, so the merge also writes the lines to run again.
    """

    plan: JobPlan
    resubmit: bool


@dataclass(frozen=True)
class Resubmit:
    """Run the lines that failed for a passing reason again, as the shards of the next round."""

    plan: JobPlan


@dataclass(frozen=True)
class Finish:
    """The job is over: this verdict (a failure is retried by Airflow when ``retryable``)."""

    plan: JobPlan
    outcome: JobOutcome
    retryable: bool = False


Step = Cancel | Submit | Wait | Merge | Resubmit | Finish


def _of_plan(plan: JobPlan, batches: Mapping[str, Batch]) -> list[Batch]:
    return [batches[s.batch_id] for s in plan.shards if s.batch_id and s.batch_id in batches]


def _may_ask_again(plan: JobPlan, now: float, policy: JobPolicy) -> bool:
    """A cancel that failed is asked again once a poll interval has passed since the last round of cancels."""
    deadline = plan.deadline
    last = None if deadline is None else (deadline.tried_at if deadline.tried_at is not None else deadline.hit_at)
    return last is None or now >= last + policy.poll_interval


def _past(plan: JobPlan, now: float) -> bool:
    return plan.deadline is not None and (plan.deadline.hit or now >= plan.deadline.at)


def decide(
    plan: JobPlan,
    batches: Mapping[str, Batch],
    *,
    merged: MergeFacts | None = None,
    now: float,
    policy: JobPolicy,
) -> Step:
    """The job's next step (see the module's rules, in order).

    :param plan: the job's shards as this try knows them (with the batches found from earlier tries).
    :param batches: its batches as last seen, by id.
    :param merged: the merge's counts, once every batch has ended and they were merged; ``None`` before.
    :param now: epoch seconds.
    :param policy: what the user asked of the job.
    """
    # 1. The deadline.
    due = deadline_step(plan, batches, now=now)
    if due is not None and (
        plan.deadline is None or not plan.deadline.hit or (due.cancel and _may_ask_again(plan, now, policy))
    ):
        return Cancel(plan, due.cancel, due.not_submitted)
    deadline = plan.deadline
    if deadline is not None and deadline.hit and deadline.on_deadline == "fail":
        answered = sum(b.request_counts.completed for b in _of_plan(plan, batches))
        cancelled = ", ".join(deadline.cancelled) or "-"
        message = (
            f"The job's deadline {describe_deadline(deadline.at)} passed with work unfinished: "
            f"{len(deadline.cancelled)} running batch(es) of the job cancelled ({cancelled}); "
            f"{answered:,} of {plan.requests:,} requests answered so far. on_deadline='fail': nothing was merged."
        )
        return Finish(plan, JobOutcome(Verdict.FAIL, JobReason.DEADLINE_EXCEEDED, message))

    # 2. Capacity: back in the queue (with a back-off), or, after MAX_CAPACITY_RETRIES, a retryable failure.
    plan, _ = requeue_capacity_failures(plan, batches, now=now, poll_interval=policy.poll_interval)
    for shard in plan.shards:
        batch = batches.get(shard.batch_id or "")
        if batch is not None and batch.status is BatchStatus.FAILED and is_capacity_failure(batch.errors):
            message = (
                f"Shard {shard.index} (batch {batch.id}) failed for capacity {shard.capacity_retries + 1} times "
                "(token_limit_exceeded or request_limit_exceeded): the organization's batch queue for "
                f"{shard.model or 'its model'} stays full. No request of it ran. A retry of the task finds every "
                "answered line and sends only the rest; set max_enqueued_tokens / max_enqueued_requests to queue "
                "shards under the limit."
            )
            return Finish(plan, JobOutcome(Verdict.FAIL, JobReason.CAPACITY, message), retryable=True)

    if plan.waiting_since is not None and not pending(plan):  # no shard waits for capacity any more
        waited = plan.capacity_wait_seconds + max(0.0, now - plan.waiting_since)
        plan = replace(plan, capacity_wait_seconds=waited, waiting_since=None)

    # 3. A batch that failed validation.
    first = judge_plan(
        plan, batches, allow_partial=policy.allow_partial, max_failed_requests=policy.max_failed_requests
    )
    if first.reason is JobReason.SHARD_FAILED:
        return Finish(plan, first)

    # 4. Admission.
    chosen = admit(plan, batches, limits=policy.limits, now=now)
    if chosen:
        return Submit(plan, tuple(chosen))

    # 5. Wait.
    running = tuple(b.id for b in _of_plan(plan, batches) if not b.status.is_terminal)
    waiting = pending(plan)
    if running or waiting:
        if waiting and plan.waiting_since is None:
            plan = replace(plan, waiting_since=now)
        until = job_wake_at(plan, now=now, batches=batches, retry_after=policy.poll_interval)
        return Wait(plan, running, until, wake_on_finish=bool(waiting))

    # 6. Merge.
    may_resubmit = plan.rounds < plan.first_round + policy.max_resubmits and not _past(plan, now)
    if merged is None:
        return Merge(plan, resubmit=may_resubmit)

    # 7. Resubmit.
    if may_resubmit and merged.retry_lines:
        return Resubmit(plan)

    # 8. Judge.
    outcome = judge_plan(
        plan,
        batches,
        allow_partial=policy.allow_partial,
        max_failed_requests=policy.max_failed_requests,
        answered=merged.answered,
        unfinished=merged.unrun,
    )
    return Finish(plan, outcome)
