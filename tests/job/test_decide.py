"""The one job decision, pinned rule by rule with an injected clock: no emulator, no Airflow, no sleeping.

Each case gives a plan (its shards, their batches, the deadline), the batches as last seen, the merge's counts,
``now`` and the policy, and expects exactly one step.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import replace
from typing import Any

import pytest

from airflow_provider_openai_batch.capacity import EnqueuedLimit, EnqueuedLimits
from airflow_provider_openai_batch.job.admission import MAX_CAPACITY_RETRIES, capacity_backoff
from airflow_provider_openai_batch.job.deadline import mark_hit
from airflow_provider_openai_batch.job.decide import (
    Cancel,
    Finish,
    JobPolicy,
    Merge,
    MergeFacts,
    Resubmit,
    Step,
    Submit,
    Wait,
    decide,
)
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan, ShardInfo
from airflow_provider_openai_batch.job.verdict import JobOutcome, JobReason
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.outcome import Verdict
from tests._kit.batches import batch, by_id

POLL = 10.0
LINES = 10  # requests per shard


def shard(i: int, batch_id: str | None = None, *, model: str = "m", size: int = 100, **kw: Any) -> ShardInfo:
    first = i * LINES + 1
    return ShardInfo(i, model, first, first + LINES - 1, LINES, size, 0, batch_id=batch_id, **kw)


def job(*shards: ShardInfo, deadline: JobDeadline | None = None, **kw: Any) -> JobPlan:
    limits = ShardLimits(max_requests=LINES, max_bytes=1000, max_embedding_inputs=10)
    return JobPlan(
        "in.jsonl", "0" * 64, LINES * len(shards), 100 * len(shards), "/v1/chat/completions", limits, True,
        tuple(shards), deadline=deadline, job="job-key", **kw,
    )  # fmt: skip


def done(batch_id: str, completed: int = LINES, failed: int = 0) -> Batch:
    return batch(batch_id, "completed", completed=completed, failed=failed, total=LINES)


def full(batch_id: str, *, input_file_id: str | None = None) -> Batch:
    """A batch that failed only because the organization's queue was full."""
    return batch(batch_id, "failed", codes=("token_limit_exceeded",), input_file_id=input_file_id)


def policy(**kw: Any) -> JobPolicy:
    return JobPolicy(poll_interval=POLL, **kw)


def tokens(limit: int | dict[str, int]) -> EnqueuedLimits:
    return EnqueuedLimits(tokens=EnqueuedLimit.parse(limit, name="max_enqueued_tokens"))


def requests(limit: int) -> EnqueuedLimits:
    return EnqueuedLimits(requests=EnqueuedLimit.parse(limit, name="max_enqueued_requests"))


def at(
    moment: float, on_deadline: str = "partial", *, hit_at: float | None = None, cancelled: tuple[str, ...] = ()
) -> JobDeadline:
    return JobDeadline(at=moment, on_deadline=on_deadline, hit_at=hit_at, cancelled=cancelled)


def facts(answered: int, unrun: int = 0, retry_lines: int = 0) -> MergeFacts:
    return MergeFacts(answered=answered, unrun=unrun, retry_lines=retry_lines)


def step_of(
    plan: JobPlan,
    *batches: Batch,
    merged: MergeFacts | None = None,
    now: float = 100.0,
    rules: JobPolicy | None = None,
) -> Step:
    return decide(plan, by_id(*batches), merged=merged, now=now, policy=rules or policy())


def test_the_policy_defaults_are_the_operators() -> None:
    assert JobPolicy() == JobPolicy(
        max_resubmits=0, allow_partial=False, max_failed_requests=None, limits=EnqueuedLimits(), poll_interval=60.0
    )


@pytest.mark.parametrize(
    "value",
    [
        JobPolicy(),
        facts(1),
        Cancel(job(), (), 0),
        Submit(job(), ()),
        Wait(job(), (), None, wake_on_finish=False),
        Merge(job(), resubmit=False),
        Resubmit(job()),
        Finish(job(), JobOutcome(Verdict.FAIL, JobReason.CAPACITY, "full"), retryable=True),
    ],
    ids=lambda v: type(v).__name__,
)
def test_steps_and_policy_are_values_no_one_changes(value: Any) -> None:
    """The runner carries a step out; it cannot edit the decision (a new plan comes from a new decision)."""
    field = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)


# -- 1. The deadline ------------------------------------------------------------------------------------------


def test_before_the_deadline_the_job_waits_for_it() -> None:
    step = step_of(job(shard(0, "b0"), deadline=at(1000)), batch("b0", "in_progress"), now=999.9)
    assert step == Wait(job(shard(0, "b0"), deadline=at(1000)), ("b0",), until=1000, wake_on_finish=False)


@pytest.mark.parametrize("on_deadline", ["fail", "partial"])
@pytest.mark.parametrize("now", [1000.0, 5000.0], ids=["at-the-deadline", "long-after"])
def test_once_the_deadline_passes_it_cancels_exactly_the_running_batches_not_yet_cancelled(
    on_deadline: str, now: float
) -> None:
    plan = job(
        shard(0, "b0"), shard(1, "b1"), shard(2, "b2"), shard(3, "b3"), shard(4, "b4"), shard(5), shard(6),
        deadline=at(1000, on_deadline, cancelled=("b4",)),
    )  # fmt: skip
    seen = (
        batch("b0", "in_progress"),
        batch("b1", "cancelling"),  # already on its way out
        done("b2"),
        batch("b3", "finalizing"),
        batch("b4", "validating"),  # cancelled before (its cancel is in the plan)
    )

    step = step_of(plan, *seen, now=now)

    assert step == Cancel(plan, ("b0", "b3"), not_submitted=2)


def test_a_deadline_passed_with_only_shards_never_submitted_gives_them_up() -> None:
    plan = job(shard(0, "b0"), shard(1, not_before=2000.0), deadline=at(1000))
    assert step_of(plan, done("b0"), now=1000) == Cancel(plan, (), not_submitted=1)


def test_a_deadline_passed_with_nothing_unfinished_is_no_deadline_hit() -> None:
    plan = job(shard(0, "b0"), deadline=at(1000, "fail"))
    assert step_of(plan, done("b0"), now=2000) == Merge(plan, resubmit=False)


def test_a_hit_deadline_asks_again_for_a_cancel_that_failed_one_poll_interval_later() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), deadline=at(1000, "partial", hit_at=1000, cancelled=("b0",)))
    seen = (batch("b0", "cancelling"), batch("b1", "in_progress"))
    # Never in a tight loop: a cancel that failed (say a 400 from a batch that just ended) waits a poll interval.
    assert step_of(plan, *seen, now=1000 + POLL - 0.001) == Wait(plan, ("b0", "b1"), 1000 + 2 * POLL - 0.001, False)
    assert step_of(plan, *seen, now=1000 + POLL) == Cancel(plan, ("b1",), not_submitted=0)
    # The last round of cancels counts, not the moment the deadline was hit.
    later = replace(plan, deadline=replace(plan.deadline, tried_at=1050.0))  # type: ignore[type-var]
    assert isinstance(step_of(later, *seen, now=1055), Wait)
    assert step_of(later, *seen, now=1060) == Cancel(later, ("b1",), not_submitted=0)


def test_hit_with_fail_finishes_at_once_not_retryable() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), shard(2), deadline=at(1000, "fail", hit_at=1000, cancelled=("b0",)))
    seen = (batch("b0", "cancelling", completed=4, total=LINES), done("b1", completed=7, failed=3))

    step = step_of(plan, *seen, now=1001)

    assert isinstance(step, Finish) and step.plan == plan and not step.retryable
    assert (step.outcome.verdict, step.outcome.reason) == (Verdict.FAIL, JobReason.DEADLINE_EXCEEDED)
    assert "1 running batch(es) of the job cancelled (b0)" in step.outcome.message
    assert "11 of 30 requests answered" in step.outcome.message
    assert "2026" not in step.outcome.message and "1970-01-01T00:16:40+00:00" in step.outcome.message


def test_hit_with_fail_and_nothing_cancelled_says_so() -> None:
    plan = job(shard(0, "b0"), shard(1), deadline=at(1000, "fail", hit_at=1000))
    step = step_of(plan, done("b0"), now=1001)
    assert isinstance(step, Finish) and step.outcome.reason is JobReason.DEADLINE_EXCEEDED
    assert "0 running batch(es) of the job cancelled (-)" in step.outcome.message


def test_hit_with_partial_waits_for_the_cancelling_batches_then_merges_and_never_resubmits() -> None:
    deadline = at(1000, "partial", hit_at=1000, cancelled=("b1",))
    plan = job(shard(0, "b0"), shard(1, "b1"), shard(2), deadline=deadline)
    rules = policy(max_resubmits=3)

    waiting = step_of(plan, done("b0"), batch("b1", "cancelling"), now=1001, rules=rules)
    assert waiting == Wait(plan, ("b1",), until=None, wake_on_finish=False)

    ended = (done("b0"), batch("b1", "cancelled", completed=4, total=LINES))
    assert step_of(plan, *ended, now=1100, rules=rules) == Merge(plan, resubmit=False)

    step = step_of(plan, *ended, merged=facts(14, unrun=16, retry_lines=16), now=1100, rules=rules)
    assert isinstance(step, Finish) and not step.retryable
    assert (step.outcome.verdict, step.outcome.reason) == (Verdict.SUCCEED, JobReason.DEADLINE)


def test_a_past_deadline_stops_resubmission_even_when_not_hit() -> None:
    plan = job(shard(0, "b0"), deadline=at(1000))
    rules = policy(max_resubmits=2)
    assert step_of(plan, done("b0", 8, 2), now=999, rules=rules) == Merge(plan, resubmit=True)
    assert step_of(plan, done("b0", 8, 2), now=1000, rules=rules) == Merge(plan, resubmit=False)
    step = step_of(plan, done("b0", 8, 2), merged=facts(8, retry_lines=2), now=1000, rules=rules)
    assert isinstance(step, Finish) and step.outcome.reason is JobReason.COMPLETED
    assert step_of(plan, done("b0", 8, 2), merged=facts(8, retry_lines=2), now=999, rules=rules) == Resubmit(plan)


def test_a_hit_deadline_not_yet_reached_on_the_clock_still_stops_resubmission() -> None:
    """``hit`` is what the job found; a clock a little behind (another worker) does not undo it."""
    plan = job(shard(0, "b0"), deadline=at(1000, "partial", hit_at=1000))
    step = step_of(plan, done("b0", 8, 2), now=900, rules=policy(max_resubmits=2))
    assert step == Merge(plan, resubmit=False)


def test_the_wait_after_a_failed_cancel_wakes_to_ask_again() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), deadline=at(1000, "partial", hit_at=1000, cancelled=("b0",)))
    # b1 runs but was never asked (its cancel failed): the wait wakes one poll interval on to ask again.
    step = step_of(plan, batch("b0", "cancelling"), batch("b1", "in_progress"), now=1001)
    assert step == Wait(plan, ("b0", "b1"), until=1001 + POLL, wake_on_finish=False)


# -- 2. Capacity --------------------------------------------------------------------------------------------


def test_a_capacity_failure_goes_back_in_the_queue_with_a_back_off() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"))

    step = step_of(plan, full("b0", input_file_id="file-0"), batch("b1", "in_progress"), now=100)

    requeued = replace(plan.shards[0], batch_id=None, capacity_retries=1, not_before=110.0, input_file_id="file-0")
    expected = replace(plan.with_shards([requeued, plan.shards[1]]), waiting_since=100.0)
    assert step == Wait(expected, ("b1",), until=110.0, wake_on_finish=True)


@pytest.mark.parametrize(("now", "submitted"), [(109.99, False), (110.0, True), (500.0, True)])
def test_a_requeued_shard_is_submitted_once_its_back_off_is_over(now: float, submitted: bool) -> None:
    plan = job(shard(0, capacity_retries=1, not_before=110.0, input_file_id="file-0"), waiting_since=100.0)

    step = step_of(plan, now=now)

    if submitted:
        assert step == Submit(plan, (plan.shards[0],))
    else:
        assert step == Wait(plan, (), until=110.0, wake_on_finish=True)


@pytest.mark.parametrize("retries", [0, 1, MAX_CAPACITY_RETRIES - 1])
def test_the_back_off_doubles_with_each_capacity_failure(retries: int) -> None:
    plan = job(shard(0, "b0", capacity_retries=retries))
    step = step_of(plan, full("b0"), now=100)
    assert isinstance(step, Wait)
    assert step.plan.shards[0].capacity_retries == retries + 1
    assert step.until == step.plan.shards[0].not_before == 100 + capacity_backoff(POLL, retries + 1)


def test_capacity_failures_past_the_retries_end_the_job_retryably() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1", model="gpt-x", capacity_retries=MAX_CAPACITY_RETRIES))

    step = step_of(plan, batch("b0", "in_progress"), full("b1"), now=100)

    assert isinstance(step, Finish) and step.retryable and step.plan == plan
    assert (step.outcome.verdict, step.outcome.reason) == (Verdict.FAIL, JobReason.CAPACITY)
    assert f"Shard 1 (batch b1) failed for capacity {MAX_CAPACITY_RETRIES + 1} times" in step.outcome.message
    assert "queue for gpt-x stays full" in step.outcome.message


def test_the_capacity_message_names_a_shard_without_a_model() -> None:
    plan = job(shard(0, "b0", model=None, capacity_retries=MAX_CAPACITY_RETRIES))  # type: ignore[arg-type]
    step = step_of(plan, full("b0"))
    assert isinstance(step, Finish) and "queue for its model stays full" in step.outcome.message


def test_a_later_rounds_capacity_failure_without_its_file_ends_the_job_retryably() -> None:
    """Its lines' file is gone after the merge: it cannot be made again within this try; a retry can."""
    plan = job(shard(0, "b0"), shard(1, "b1", round=1, capacity_retries=1), first_round=0)
    step = step_of(plan, done("b0"), full("b1"), now=100, rules=policy(max_resubmits=1))
    assert isinstance(step, Finish) and step.retryable and step.outcome.reason is JobReason.CAPACITY
    assert "Shard 1 (batch b1) failed for capacity 2 times" in step.outcome.message


def test_a_capacity_failure_past_a_hit_deadline_is_given_up() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), deadline=at(1000, "partial", hit_at=1000))
    step = step_of(plan, full("b0"), done("b1", 6, 4), now=1001)
    requeued = replace(plan.shards[0], batch_id=None, capacity_retries=1, not_before=1011.0)
    assert step == Merge(plan.with_shards([requeued, plan.shards[1]]), resubmit=False)


# -- capacity-wait bookkeeping -----------------------------------------------------------------------------


def test_the_capacity_wait_is_added_up_once_no_shard_waits() -> None:
    plan = job(shard(0, "b0"), waiting_since=50.0, capacity_wait_seconds=7.0)
    step = step_of(plan, batch("b0", "in_progress"), now=80)
    assert step.plan.waiting_since is None and step.plan.capacity_wait_seconds == 37.0


def test_a_clock_behind_the_wait_start_adds_nothing() -> None:
    plan = job(shard(0, "b0"), waiting_since=50.0, capacity_wait_seconds=7.0)
    step = step_of(plan, batch("b0", "in_progress"), now=40)
    assert step.plan.waiting_since is None and step.plan.capacity_wait_seconds == 7.0


def test_a_wait_that_goes_on_keeps_its_start() -> None:
    plan = job(shard(0, "b0"), shard(1), waiting_since=50.0, capacity_wait_seconds=7.0)
    step = step_of(plan, batch("b0", "in_progress"), now=80, rules=policy(limits=tokens(150)))
    assert step == Wait(plan, ("b0",), until=None, wake_on_finish=True)


def test_no_wait_no_bookkeeping() -> None:
    plan = job(shard(0, "b0"), capacity_wait_seconds=7.0)
    step = step_of(plan, batch("b0", "in_progress"), now=80)
    assert step.plan == plan


# -- 3. A batch that failed validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codes",
    [("invalid_json_line",), ("token_limit_exceeded", "model_not_found"), ()],
    ids=["input-error", "capacity-and-input-error", "no-code"],
)
def test_a_batch_that_failed_validation_ends_the_job_not_retryably(codes: tuple[str, ...]) -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), shard(2))

    step = step_of(plan, batch("b0", "in_progress"), batch("b1", "failed", codes=codes), rules=policy(max_resubmits=2))

    assert isinstance(step, Finish) and not step.retryable and step.plan == plan
    assert (step.outcome.verdict, step.outcome.reason) == (Verdict.FAIL, JobReason.SHARD_FAILED)
    assert "left running" in step.outcome.message


# -- 4. Admission ---------------------------------------------------------------------------------------------


def test_without_limits_every_due_shard_is_submitted_at_once() -> None:
    plan = job(shard(0, "b0"), shard(1), shard(2, model="n"), shard(3), shard(4, not_before=200.0))
    step = step_of(plan, batch("b0", "in_progress"), now=100)
    assert step == Submit(plan, plan.shards[1:4])


@pytest.mark.parametrize(
    ("limits", "admitted"),
    [
        (tokens(250), (1, 2)),  # 100 runs; shard 1 fits (200), shard 3 would make 300: it waits, FIFO
        (tokens(150), (2,)),  # shard 1 does not fit and holds back shard 3; model n has nothing running
        (tokens({"m": 150, "n": 50}), (2,)),  # alone, a shard is admitted whatever its size
        (requests(2 * LINES), (1, 2)),
        (requests(LINES), (2,)),
    ],
    ids=["tokens-one-more", "tokens-none-of-m", "per-model", "requests-one-more", "requests-none-of-m"],
)
def test_with_limits_shards_are_admitted_first_in_first_out_per_model(
    limits: EnqueuedLimits, admitted: tuple[int, ...]
) -> None:
    plan = job(shard(0, "b0"), shard(1), shard(2, model="n"), shard(3))
    step = step_of(plan, batch("b0", "in_progress"), rules=policy(limits=limits))
    assert step == Submit(plan, tuple(plan.shards[i] for i in admitted))


def test_with_limits_a_shard_that_does_not_fit_waits_for_a_batch_to_end() -> None:
    plan = job(shard(0, "b0"), shard(1), shard(2))
    step = step_of(plan, batch("b0", "in_progress"), now=100, rules=policy(limits=tokens(150)))
    assert step == Wait(replace(plan, waiting_since=100.0), ("b0",), until=None, wake_on_finish=True)


def test_a_shard_in_back_off_holds_back_the_later_shards_of_its_model() -> None:
    plan = job(shard(0, "b0"), shard(1, not_before=500.0, capacity_retries=1), shard(2), shard(3, model="n"))
    step = step_of(plan, batch("b0", "in_progress"), now=100, rules=policy(limits=tokens(1000)))
    assert step == Submit(plan, (plan.shards[3],))
    later = job(shard(0, "b0"), shard(1, not_before=500.0, capacity_retries=1), shard(2), shard(3, "b3", model="n"))
    step = step_of(later, batch("b0", "in_progress"), batch("b3", "in_progress"), rules=policy(limits=tokens(1000)))
    assert step == Wait(replace(later, waiting_since=100.0), ("b0", "b3"), until=500.0, wake_on_finish=True)


def test_finished_batches_take_no_room() -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), shard(2))
    step = step_of(plan, done("b0"), batch("b1", "expired"), rules=policy(limits=tokens(100)))
    assert step == Submit(plan, (plan.shards[2],))


# -- 5. Wait --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["validating", "in_progress", "finalizing", "cancelling", "paused_by_gateway"])
def test_a_running_batch_is_waited_on_whatever_its_status(status: str) -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"))
    step = step_of(plan, batch("b0", status), done("b1"), merged=facts(20), rules=policy(max_resubmits=1))
    assert step == Wait(plan, ("b0",), until=None, wake_on_finish=False)


def test_the_wait_wakes_at_the_earliest_back_off_or_the_deadline() -> None:
    shards = (shard(0, "b0"), shard(1, not_before=300.0), shard(2, model="n", not_before=250.0))
    early, late = job(*shards, deadline=at(200)), job(*shards, deadline=at(400))
    rules = policy(limits=tokens(1000))
    assert step_of(early, batch("b0", "in_progress"), rules=rules) == Wait(
        replace(early, waiting_since=100.0), ("b0",), until=200.0, wake_on_finish=True
    )
    assert step_of(late, batch("b0", "in_progress"), rules=rules) == Wait(
        replace(late, waiting_since=100.0), ("b0",), until=250.0, wake_on_finish=True
    )


def test_a_batch_id_not_seen_is_neither_waited_on_nor_judged() -> None:
    """A batch the record did not return this time (the service lost it) is not waited on forever."""
    plan = job(shard(0, "b0"), shard(1, "gone"))
    assert step_of(plan, done("b0")) == Merge(plan, resubmit=False)


# -- 6. Merge, 7. Resubmit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_round", "rounds", "max_resubmits", "resubmit"),
    [
        (0, 0, 0, False),
        (0, 0, 1, True),
        (0, 1, 1, False),
        (0, 1, 2, True),
        (2, 2, 0, False),  # a retry that found two earlier rounds: none of its own allowed
        (2, 2, 1, True),  # ... one of its own, counted from the round it started at
        (2, 3, 1, False),
        (1, 3, 3, True),
        (0, 2, 1, False),  # more rounds than this try allows (a plan from a try with a higher max_resubmits)
    ],
    ids=lambda v: str(v),
)
def test_merge_says_whether_a_resubmission_round_may_follow(
    first_round: int, rounds: int, max_resubmits: int, resubmit: bool
) -> None:
    plan = job(shard(0, "b0"), *(shard(r, f"b{r}", round=r) for r in range(1, rounds + 1)), first_round=first_round)
    seen = [done(f"b{r}", 8, 2) for r in range(rounds + 1)]
    rules = policy(max_resubmits=max_resubmits)

    assert step_of(plan, *seen, rules=rules) == Merge(plan, resubmit=resubmit)
    again = step_of(plan, *seen, merged=facts(10 * rounds + 8, retry_lines=2), rules=rules)
    if resubmit:
        assert again == Resubmit(plan)
    else:
        assert isinstance(again, Finish)


def test_nothing_to_run_again_is_no_resubmission() -> None:
    plan = job(shard(0, "b0"))
    step = step_of(plan, done("b0", 8, 2), merged=facts(8, retry_lines=0), rules=policy(max_resubmits=3))
    assert isinstance(step, Finish) and step.outcome.reason is JobReason.COMPLETED


# -- 8. The verdict ---------------------------------------------------------------------------------------------


VERDICTS = [
    pytest.param((done("b0"), done("b1")), facts(20), {}, None, (Verdict.SUCCEED, JobReason.COMPLETED), id="completed"),
    pytest.param(
        (done("b0"), done("b1", 5, 5)), facts(15), {}, None, (Verdict.SUCCEED, JobReason.COMPLETED),
        id="completed-with-failed-lines",
    ),
    pytest.param(
        (done("b0"), batch("b1", "expired", completed=4, total=LINES)), facts(14, unrun=6), {"allow_partial": True},
        None, (Verdict.SUCCEED, JobReason.PARTIAL), id="partial",
    ),
    pytest.param(
        (done("b0"), done("b1", 9, 1)), facts(19), {"max_failed_requests": 0}, None,
        (Verdict.FAIL, JobReason.TOO_MANY_FAILED_REQUESTS), id="too-many-failed-count",
    ),
    pytest.param(
        (done("b0"), done("b1", 7, 3)), facts(17), {"max_failed_requests": 0.1}, None,
        (Verdict.FAIL, JobReason.TOO_MANY_FAILED_REQUESTS), id="too-many-failed-share",
    ),
    pytest.param(
        (done("b0", 0, 10), done("b1", 0, 10)), facts(0), {}, None, (Verdict.FAIL, JobReason.ALL_REQUESTS_FAILED),
        id="all-requests-failed",
    ),
    pytest.param(
        (batch("b0", "expired", total=LINES), batch("b1", "cancelled", total=LINES)), facts(0, unrun=20),
        {"allow_partial": True}, None, (Verdict.FAIL, JobReason.NO_OUTPUT), id="no-output",
    ),
    pytest.param(
        (done("b0"), batch("b1", "expired", completed=4, total=LINES)), facts(14, unrun=6), {}, None,
        (Verdict.FAIL, JobReason.EXPIRED), id="expired-without-allow-partial",
    ),
    pytest.param(
        (done("b0"), batch("b1", "cancelled", completed=4, total=LINES)), facts(14, unrun=6), {}, None,
        (Verdict.FAIL, JobReason.CANCELLED), id="cancelled-without-allow-partial",
    ),
    pytest.param(
        (done("b0"), batch("b1", "expired", completed=4, total=LINES)), facts(20, unrun=0), {}, None,
        (Verdict.SUCCEED, JobReason.COMPLETED), id="expired-lines-all-run-again",
    ),
    pytest.param(
        (done("b0"), batch("b1", "cancelled", completed=4, total=LINES)), facts(14, unrun=6), {},
        at(1000, "partial", hit_at=1000, cancelled=("b1",)), (Verdict.SUCCEED, JobReason.DEADLINE),
        id="deadline-partial-accepted",
    ),
    pytest.param(
        (done("b0", 4, 6), batch("b1", "cancelled", completed=4, total=LINES)), facts(8, unrun=6),
        {"max_failed_requests": 0.5}, at(1000, "partial", hit_at=1000, cancelled=("b1",)),
        (Verdict.FAIL, JobReason.TOO_MANY_FAILED_REQUESTS), id="deadline-partial-too-many-failed",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("seen", "merged", "options", "deadline", "verdict"), VERDICTS)
def test_the_whole_job_is_judged_on_what_the_merge_counted(
    seen: tuple[Batch, ...],
    merged: MergeFacts,
    options: dict[str, Any],
    deadline: JobDeadline | None,
    verdict: tuple[Verdict, JobReason],
) -> None:
    plan = job(shard(0, "b0"), shard(1, "b1"), deadline=deadline)

    step = step_of(plan, *seen, merged=merged, now=2000, rules=policy(**options))

    assert isinstance(step, Finish) and step.plan == plan and not step.retryable
    assert (step.outcome.verdict, step.outcome.reason) == verdict


def test_the_verdict_counts_the_merge_not_the_batches() -> None:
    """The merge counts a 2xx answer only; a batch's own count says 10 completed."""
    plan = job(shard(0, "b0"))
    step = step_of(plan, done("b0"), merged=facts(0), rules=policy())
    assert isinstance(step, Finish) and step.outcome.reason is JobReason.ALL_REQUESTS_FAILED


# -- a job run through, the runner's part played by the test --------------------------------------------------------


def test_a_job_runs_through_capacity_and_the_deadline_without_a_wall_clock() -> None:
    plan = job(shard(0), shard(1), deadline=at(1000, "partial"))
    rules = policy(limits=requests(LINES), max_resubmits=1)
    seen: dict[str, Batch] = {}

    step = decide(plan, seen, now=0, policy=rules)
    assert step == Submit(plan, (plan.shards[0],))  # one at a time under the limit
    plan = plan.with_shards([plan.shards[0].with_batch("b0", reused=False), plan.shards[1]])
    seen["b0"] = batch("b0", "in_progress")

    step = decide(plan, seen, now=10, policy=rules)
    assert isinstance(step, Wait) and step.batch_ids == ("b0",) and step.wake_on_finish and step.until == 1000
    plan = step.plan
    assert plan.waiting_since == 10

    seen["b0"] = full("b0")  # the organization's queue was full after all: back in the queue, first in its model
    step = decide(plan, seen, now=20, policy=rules)
    assert isinstance(step, Wait) and step.batch_ids == () and step.until == 30 and step.wake_on_finish
    plan = step.plan
    step = decide(plan, seen, now=30, policy=rules)
    assert isinstance(step, Submit) and [s.index for s in step.shards] == [0]  # shard 1 still waits its turn
    plan = step.plan.with_shards([step.shards[0].with_batch("b1", reused=False), step.plan.shards[1]])
    seen["b1"] = batch("b1", "in_progress")

    step = decide(plan, seen, now=1000, policy=rules)
    assert step == Cancel(plan, ("b1",), not_submitted=1)
    plan = mark_hit(plan, now=1000, cancelled=("b1",))
    seen["b1"] = batch("b1", "cancelling")

    step = decide(plan, seen, now=1001, policy=rules)
    # Shard 1 waited for capacity from 10 until the deadline gave it up (counted when next asked).
    plan = replace(plan, capacity_wait_seconds=991.0, waiting_since=None)
    assert step == Wait(plan, ("b1",), until=None, wake_on_finish=False)
    seen["b1"] = batch("b1", "cancelled", completed=3, total=LINES)
    step = decide(plan, seen, now=1100, policy=rules)
    assert step == Merge(plan, resubmit=False)
    step = decide(plan, seen, merged=facts(3, unrun=17, retry_lines=0), now=1100, policy=rules)
    assert isinstance(step, Finish) and step.outcome.reason is JobReason.DEADLINE
    assert step.plan.capacity_wait_seconds == 991.0 and step.plan.waiting_since is None


# -- totality -----------------------------------------------------------------------------------------------------

STATUSES: tuple[str | None, ...] = (
    None,  # never submitted
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "completed",
    "failed:capacity",
    "failed:input",
    "expired",
    "cancelled",
    "paused_by_gateway",  # a status this version does not know
    "missing",  # a batch id the record did not return
)
DEADLINES: tuple[JobDeadline | None, ...] = (
    None,
    at(100, "fail"),
    at(100, "partial"),
    at(100, "fail", hit_at=100, cancelled=("b0",)),
    at(100, "partial", hit_at=100, cancelled=("b1",)),
)
_LIMITED = policy(max_resubmits=2, allow_partial=True, max_failed_requests=0.5, limits=tokens(150))
#: policy, merge counts, first round: each policy meets "before the merge" and after it.
SCENARIOS: tuple[tuple[JobPolicy, MergeFacts | None, int], ...] = (
    (policy(), None, 0),
    (policy(), facts(12, 4, 4), 0),
    (_LIMITED, None, 1),
    (_LIMITED, facts(0, unrun=20, retry_lines=20), 0),
    (JobPolicy(max_resubmits=1, max_failed_requests=0, limits=requests(LINES), poll_interval=0), facts(20), 0),
)


def _seen(i: int, status: str | None) -> tuple[ShardInfo, Batch | None]:
    retries = {"failed:capacity": MAX_CAPACITY_RETRIES - 1}.get(status or "", 0)
    if status is None:
        return shard(i, model="m" if i else "n", not_before=50.0 * i or None), None
    info = shard(i, f"b{i}", round=i, capacity_retries=retries)
    if status == "missing":
        return info, None
    if status == "failed:capacity":
        return info, full(f"b{i}")
    if status == "failed:input":
        return info, batch(f"b{i}", "failed", codes=("invalid_json_line",))
    return info, batch(f"b{i}", status, completed=3, total=LINES)


def test_decide_is_total_one_step_for_every_plan_status_clock_and_policy() -> None:
    """A generated grid (no hypothesis: not a dependency): decide never raises and returns one coherent step."""
    kinds: dict[str, int] = {}
    for (s0, s1), deadline, now, (rules, merged, first_round) in itertools.product(
        itertools.product(STATUSES, repeat=2), DEADLINES, (0.0, 100.0, 1e9), SCENARIOS
    ):
        (info0, b0), (info1, b1) = _seen(0, s0), _seen(1, s1)
        plan = job(info0, info1, deadline=deadline, first_round=first_round, waiting_since=25.0 if s0 else None)
        seen = {b.id: b for b in (b0, b1) if b is not None}
        step = decide(plan, seen, merged=merged, now=now, policy=rules)
        case = f"{s0}/{s1} deadline={deadline} now={now} policy={rules} merged={merged}"

        assert isinstance(step, (Cancel, Submit, Wait, Merge, Resubmit, Finish)), case
        assert isinstance(step.plan, JobPlan) and len(step.plan.shards) == 2, case
        kinds[type(step).__name__] = kinds.get(type(step).__name__, 0) + 1
        running = {b.id for b in seen.values() if not b.status.is_terminal}
        past = deadline is not None and (deadline.hit or now >= deadline.at)
        if isinstance(step, Cancel):
            assert past and set(step.batch_ids) <= running, case
        if isinstance(step, (Submit, Resubmit)):
            assert not past, case  # nothing more is submitted past the deadline
        if isinstance(step, Submit):
            assert step.shards and all(s.batch_id is None and (s.not_before or 0) <= now for s in step.shards), case
        if isinstance(step, Wait):
            # A wait on no batch must end by the clock, or nothing would ever wake the task.
            assert set(step.batch_ids) <= running and (step.batch_ids or step.until is not None), case
            if not past:  # woken by any batch's end exactly when a shard waits for room
                assert step.wake_on_finish is any(s.batch_id is None for s in step.plan.shards), case
            assert step.until is None or step.until > now, case
        if isinstance(step, Finish):
            assert step.retryable is (step.outcome.reason is JobReason.CAPACITY), case
            assert step.outcome.verdict is not Verdict.WAIT, case
        early = (JobReason.DEADLINE_EXCEEDED, JobReason.CAPACITY, JobReason.SHARD_FAILED)  # may leave some running
        if isinstance(step, (Merge, Resubmit)) or (isinstance(step, Finish) and step.outcome.reason not in early):
            assert not running and (merged is not None or isinstance(step, Merge)), case
    assert set(kinds) == {"Cancel", "Submit", "Wait", "Merge", "Resubmit", "Finish"}, kinds
