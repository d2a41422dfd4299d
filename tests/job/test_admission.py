"""Admission of shard batches under the enqueued-token budget: FIFO per model, back-off, requeue."""

from __future__ import annotations

from typing import Any

from airflow_provider_openai_batch.capacity import EnqueuedLimit, EnqueuedLimits
from airflow_provider_openai_batch.job.admission import (
    MAX_CAPACITY_RETRIES,
    admit,
    capacity_backoff,
    pending,
    requeue_capacity_failures,
)
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.models import Batch


def shard(i: int, size: int, model: str = "m", batch_id: str | None = None, requests: int = 1, **kw: Any) -> ShardInfo:
    return ShardInfo(i, model, i + 1, i + 1, requests, size, 0, batch_id=batch_id, **kw)


def tokens(limit: int | dict[str, int]) -> EnqueuedLimits:
    return EnqueuedLimits(tokens=EnqueuedLimit.parse(limit, name="max_enqueued_tokens"))


def plan(*shards: ShardInfo) -> JobPlan:
    limits = ShardLimits(max_requests=10, max_bytes=1000, max_embedding_inputs=10)
    return JobPlan("in", "0" * 64, len(shards), 0, "/v1/chat/completions", limits, True, tuple(shards))


def batch(batch_id: str, status: str, code: str | None = None, **extra: Any) -> Batch:
    data: dict[str, Any] = {"id": batch_id, "status": status, **extra}
    if code:
        data["errors"] = {"data": [{"code": code, "message": "full"}]}
    return Batch.from_dict(data)


def test_admits_in_order_within_the_budget_per_model() -> None:
    job = plan(shard(0, 40, batch_id="b0"), shard(1, 40), shard(2, 30), shard(3, 10, model="n"), shard(4, 10))
    running = {"b0": batch("b0", "in_progress")}

    chosen = admit(job, running, limits=tokens(100), now=0)

    # 40 runs; shard 1 fits (80), shard 2 would make 110: it and the later shard 4 of its model wait.
    assert [s.index for s in chosen] == [1, 3]
    assert [s.index for s in admit(job, {"b0": batch("b0", "completed")}, limits=tokens(100), now=0)] == [1, 2, 3, 4]


def test_a_shard_alone_is_admitted_whatever_its_size_and_back_off_is_respected() -> None:
    assert [s.index for s in admit(plan(shard(0, 500)), {}, limits=tokens(100), now=0)] == [0]
    waiting = plan(shard(0, 10, not_before=50.0))
    assert admit(waiting, {}, limits=tokens(100), now=49) == []
    assert [s.index for s in admit(waiting, {}, limits=tokens(100), now=50)] == [0]


def test_only_capacity_failures_are_requeued_with_a_growing_back_off() -> None:
    job = plan(shard(0, 10, batch_id="b0"), shard(1, 10, batch_id="b1"), shard(2, 10, batch_id="b2", round=1))
    seen = {
        "b0": batch("b0", "failed", "token_limit_exceeded"),
        "b1": batch("b1", "failed", "invalid_request"),
        "b2": batch("b2", "failed", "token_limit_exceeded"),
    }

    again, requeued = requeue_capacity_failures(job, seen, now=100, poll_interval=5)

    assert requeued == 1 and [s.index for s in pending(again)] == [0]
    assert again.shards[0].capacity_retries == 1 and again.shards[0].not_before == 105
    assert capacity_backoff(5, 3) == 20 and capacity_backoff(5, 40) == 3600
    assert again.shards[0].input_file_id is None  # cut again from the input
    # A resubmission round's shard is made again from the file its failed batch was made from.
    seen["b2"] = batch("b2", "failed", "request_limit_exceeded", input_file_id="file-r1")
    again, requeued = requeue_capacity_failures(job, seen, now=100, poll_interval=5)
    assert requeued == 2 and again.shards[2].input_file_id == "file-r1" and again.shards[2].batch_id is None
    spent = plan(shard(0, 10, batch_id="b0", capacity_retries=MAX_CAPACITY_RETRIES))
    assert requeue_capacity_failures(spent, seen, now=0, poll_interval=5)[1] == 0


def test_the_plan_carries_admission_state_across_the_deferral() -> None:
    job = plan(shard(0, 10, capacity_retries=2, not_before=7.5, input_file_id="file-1"))
    job = JobPlan.from_dict({**job.to_dict(), "capacity_wait_seconds": 3.5, "waiting_since": 1.0})
    assert job.shards[0].capacity_retries == 2 and job.shards[0].not_before == 7.5
    assert job.shards[0].input_file_id == "file-1"
    assert (job.capacity_wait_seconds, job.waiting_since) == (3.5, 1.0)


def test_requests_are_budgeted_alongside_tokens_and_either_holds_a_shard_back() -> None:
    job = plan(*(shard(i, 10, requests=10) for i in range(10)))
    by_requests = EnqueuedLimits(requests=EnqueuedLimit(30))

    assert [s.index for s in admit(job, {}, limits=by_requests, now=0)] == [0, 1, 2]
    running = job.with_shards([s.with_batch(f"b{s.index}", reused=False) if s.index < 3 else s for s in job.shards])
    seen = {"b0": batch("b0", "completed"), "b1": batch("b1", "in_progress"), "b2": batch("b2", "finalizing")}
    assert [s.index for s in admit(running, seen, limits=by_requests, now=0)] == [3]  # one finished: one more
    # Both set: the tighter one for this job decides (tokens 25 = two shards, requests 30 = three).
    both = EnqueuedLimits(tokens=EnqueuedLimit(25), requests=EnqueuedLimit(30))
    assert [s.index for s in admit(job, {}, limits=both, now=0)] == [0, 1]


def test_limits_apply_per_model_and_unnamed_models_are_free() -> None:
    job = plan(shard(0, 10, "a", requests=5), shard(1, 10, "a", requests=5), shard(2, 10, "b", requests=5))
    job = job.with_shards([*job.shards, shard(3, 10, "b", requests=5), shard(4, 10, "c", requests=5)])
    limits = EnqueuedLimits(requests=EnqueuedLimit.parse({"a": 5, "b": 10}, name="max_enqueued_requests"))

    assert [s.index for s in admit(job, {}, limits=limits, now=0)] == [0, 2, 3, 4]
    assert [s.index for s in admit(job, {}, limits=EnqueuedLimits(), now=0)] == [0, 1, 2, 3, 4]


def test_a_resubmission_round_counts_against_the_budget_like_the_input_shards() -> None:
    job = plan(shard(0, 10, batch_id="b0", requests=4), shard(1, 10, batch_id="b1", requests=4))
    job = job.with_shards([*job.shards, shard(2, 10, requests=3, round=1), shard(3, 10, requests=3, round=1)])
    seen = {"b0": batch("b0", "in_progress"), "b1": batch("b1", "completed")}
    limits = EnqueuedLimits(requests=EnqueuedLimit(8))

    assert [s.index for s in admit(job, seen, limits=limits, now=0)] == [2]  # 4 running + 3 fits, + 3 more not


def test_the_back_off_starts_at_the_poll_interval_and_never_at_zero() -> None:
    assert [capacity_backoff(5, n) for n in (0, 1, 2, 4)] == [5.0, 5.0, 10.0, 40.0]
    assert capacity_backoff(0, 1) == 0.001  # a zero poll interval still backs off


def test_a_shard_is_put_back_at_most_8_times() -> None:
    failed = {"b0": batch("b0", "failed", "token_limit_exceeded")}
    assert MAX_CAPACITY_RETRIES == 8
    for retries, requeued in ((1, True), (7, True), (8, False)):
        job = plan(shard(0, 10, batch_id="b0", capacity_retries=retries, reused=True))
        again, count = requeue_capacity_failures(job, failed, now=0, poll_interval=5)
        assert count == int(requeued)
        if requeued:
            # A fresh batch is made for it (not reused), and the retry is counted.
            assert (again.shards[0].capacity_retries, again.shards[0].reused) == (retries + 1, False)


def test_budgets_are_exact_and_count_every_running_batch_of_the_model() -> None:
    running = {"b0": batch("b0", "in_progress"), "b1": batch("b1", "validating")}

    def admitted(size: int, limits: EnqueuedLimits, requests: int = 1) -> list[int]:
        job = plan(
            shard(0, 40, batch_id="b0", requests=4),
            shard(1, 30, batch_id="b1", requests=3),
            shard(2, size, requests=requests),
        )
        return [s.index for s in admit(job, running, limits=limits, now=0)]

    assert admitted(30, tokens(100)) == [2]  # 40 + 30 running, + 30 is exactly the budget
    assert admitted(31, tokens(100)) == []
    assert admitted(35, tokens(105)) == [2]
    by_requests = EnqueuedLimits(requests=EnqueuedLimit(10))
    assert admitted(1, by_requests, requests=3) == [2]
    assert admitted(1, by_requests, requests=4) == []


def test_a_model_held_back_does_not_hold_back_the_next_model() -> None:
    job = plan(shard(0, 10, batch_id="b0"), shard(1, 95), shard(2, 5), shard(3, 5, model="n"))
    assert [s.index for s in admit(job, {"b0": batch("b0", "in_progress")}, limits=tokens(100), now=0)] == [3]


def test_a_shard_is_due_from_its_not_before_on() -> None:
    waiting = plan(shard(0, 10, not_before=50.0))
    assert [s.index for s in admit(waiting, {}, limits=tokens(100), now=51)] == [0]
