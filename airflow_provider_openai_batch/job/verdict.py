"""What a job's shard batches mean for its task: the sensor's verdict on one batch, over the whole job.

A shard that ``failed`` validation fails the job (its errors named). An ``expired`` or ``cancelled`` shard
fails it unless ``allow_partial``. Then the totals decide: no answered line fails the job, and
``max_failed_requests`` (a count or a share) applies to the job's failed lines, not to each shard's.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.outcome import FailedRequestsPolicy, Verdict, judge_batch

__all__ = ["JobOutcome", "JobReason", "describe_job_progress", "judge_job", "judge_plan"]


class JobReason(str, enum.Enum):
    """Why a job has its verdict (the manifest's ``reason``)."""

    RUNNING = "running"
    SHARD_FAILED = "shard_failed"
    CAPACITY = "capacity"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ALL_REQUESTS_FAILED = "all_requests_failed"
    NO_OUTPUT = "no_output"
    TOO_MANY_FAILED_REQUESTS = "too_many_failed_requests"
    COMPLETED = "completed"
    PARTIAL = "partial"
    #: accepted with what the job had at its deadline (``on_deadline="partial"``)
    DEADLINE = "deadline"
    #: failed at its deadline (``on_deadline="fail"``)
    DEADLINE_EXCEEDED = "deadline_exceeded"


@dataclass(frozen=True)
class JobOutcome:
    """The verdict on a job.

    :param verdict: wait, succeed or fail.
    :param reason: why (see :class:`JobReason`).
    :param message: what happened, naming the shards concerned.
    """

    verdict: Verdict
    reason: JobReason
    message: str


def _name(shard: ShardInfo, batch: Batch) -> str:
    return f"shard {shard.index} (batch {batch.id}, input lines {shard.first_line}-{shard.last_line})"


def judge_job(
    shards: Sequence[tuple[ShardInfo, Batch]],
    *,
    requests: int,
    answered: int | None = None,
    allow_partial: bool = False,
    max_failed_requests: int | float | None = None,
    unfinished: int | None = None,
    deadline_cancelled: Collection[str] | None = None,
) -> JobOutcome:
    """Decide what the shard batches mean for the job.

    :param shards: every shard with its batch as last seen.
    :param requests: the job's requests (input lines).
    :param answered: input lines with an answer in the merged output; ``None`` before the merge (the
        batches' own counts are used then).
    :param allow_partial: accept expired or cancelled shards that kept some results.
    :param max_failed_requests: see :class:`~airflow_provider_openai_batch.outcome.FailedRequestsPolicy`;
        applies to the job's total.
    :param unfinished: after the merge, the job's lines that never ran (expired or cancelled) in the end:
        an expired or cancelled shard whose lines were all run again by a resubmission is then no failure.
    :param deadline_cancelled: set when the job's deadline was hit and ``on_deadline="partial"``: the batches
        it cancelled then, accepted as partial whatever ``allow_partial`` says (the totals still decide).
    """
    policy = FailedRequestsPolicy(max_failed_requests)
    failed = [(s, b) for s, b in shards if b.status is BatchStatus.FAILED]
    if failed:
        running = sum(1 for _, b in shards if not b.status.is_terminal)
        still = (
            f" The other {running} shard batch(es) still running were left running; a retry or a clear reuses "
            "them and creates only the shards that failed."
            if running
            else ""
        )
        details = "\n".join(f"{_name(s, b)}: {judge_batch(b).message}" for s, b in failed)
        return JobOutcome(
            Verdict.FAIL, JobReason.SHARD_FAILED, f"{len(failed)} shard batch(es) failed:\n{details}{still}"
        )
    if any(not b.status.is_terminal for _, b in shards):
        done = sum(1 for _, b in shards if b.status.is_terminal)
        return JobOutcome(Verdict.WAIT, JobReason.RUNNING, f"{done}/{len(shards)} shard batches finished")
    short = [(s, b) for s, b in shards if b.status.may_have_partial_output]
    accepted = set(deadline_cancelled or ())
    refused = [(s, b) for s, b in short if b.id not in accepted]
    if refused and not allow_partial and (unfinished is None or unfinished > 0):
        status = JobReason(refused[0][1].status.value)
        lines = "\n".join(
            f"{_name(s, b)}: {b.status.value}, {b.request_counts.completed} completed of {b.request_counts.total}"
            for s, b in refused
        )
        return JobOutcome(
            Verdict.FAIL,
            status,
            f"{len(refused)} shard batch(es) ended before finishing:\n{lines}\nSet allow_partial=True to accept "
            "partial results.",
        )
    completed = answered if answered is not None else sum(b.request_counts.completed for _, b in shards)
    failures = requests - completed
    tally = (
        f"{completed:,} answered, {failures:,} failed or unanswered of {requests:,} requests in {len(shards)} batch(es)"
    )
    if completed == 0:
        reason = JobReason.NO_OUTPUT if short else JobReason.ALL_REQUESTS_FAILED
        return JobOutcome(Verdict.FAIL, reason, f"The job has no answered request: {tally}; see the error file.")
    if policy.exceeded_by(failures, requests):
        return JobOutcome(
            Verdict.FAIL,
            JobReason.TOO_MANY_FAILED_REQUESTS,
            f"The job has more failed requests than max_failed_requests={policy.describe()}: {tally}; see the "
            "error file (failed lines by error code are in the manifest).",
        )
    if deadline_cancelled is not None and failures:
        return JobOutcome(
            Verdict.SUCCEED, JobReason.DEADLINE, f"Job accepted with the results it had at its deadline: {tally}."
        )
    if short and (unfinished is None or unfinished > 0):
        return JobOutcome(Verdict.SUCCEED, JobReason.PARTIAL, f"Job accepted with partial results: {tally}.")
    return JobOutcome(Verdict.SUCCEED, JobReason.COMPLETED, f"Job completed: {tally}.")


def judge_plan(
    plan: JobPlan,
    batches: Mapping[str, Batch],
    *,
    allow_partial: bool,
    max_failed_requests: int | float | None,
    answered: int | None = None,
    unfinished: int | None = None,
) -> JobOutcome:
    """:func:`judge_job` over a plan: every shard that has a batch, and the batches its deadline cancelled
    accepted when ``on_deadline="partial"``."""
    from airflow_provider_openai_batch.job.deadline import accepted_at_deadline

    pairs = [(shard, batches[shard.batch_id]) for shard in plan.shards if shard.batch_id and shard.batch_id in batches]
    return judge_job(
        pairs,
        requests=plan.requests,
        answered=answered,
        allow_partial=allow_partial,
        max_failed_requests=max_failed_requests,
        unfinished=unfinished,
        deadline_cancelled=accepted_at_deadline(plan),
    )


def describe_job_progress(batches: Sequence[Batch], requests: int | None = None) -> str:
    """One log line for the whole job: shards finished, requests completed and failed of the total."""
    done = sum(1 for b in batches if b.status.is_terminal)
    completed = sum(b.request_counts.completed for b in batches)
    failed = sum(b.request_counts.failed for b in batches)
    total = requests if requests is not None else sum(b.request_counts.total for b in batches)
    percent = 100.0 * (completed + failed) / total if total else 0.0
    states: dict[str, int] = {}
    for batch in batches:
        states[batch.status.value] = states.get(batch.status.value, 0) + 1
    shown = ", ".join(f"{count} {status}" for status, count in sorted(states.items()))
    return (
        f"Job: {done}/{len(batches)} shard batches finished ({shown}); {completed:,} completed / {failed:,} failed "
        f"of {total:,} requests ({percent:.1f}%)"
    )
