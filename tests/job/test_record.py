"""The job's record: its key, its batches' tags, and finding every batch of a job whatever made it."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.job.record import JobRecord, adopt, find_job_batches, job_key, round_of, shard_key
from airflow_provider_openai_batch.models import Batch, BatchStatus
from tests._kit.ti import FakeTI, context

TAG = "airflow_idempotency_key"


def batch(batch_id: str, tag: str | None, *, status: str = "completed", created_at: int = 0, **extra: Any) -> Batch:
    return Batch.from_dict(
        {
            "id": batch_id,
            "status": status,
            "created_at": created_at,
            "metadata": {TAG: tag} if tag is not None else {"other": "x"},
            "request_counts": {"total": 4, "completed": 4, "failed": 0},
            **extra,
        }
    )


def test_the_job_key_depends_on_the_task_instance_and_the_input_only() -> None:
    key = job_key(context(FakeTI()), "abc")
    assert key == job_key(context(FakeTI(try_number=7)), "abc")  # never the try
    assert len({key, job_key(context(FakeTI(map_index=1)), "abc"), job_key(context(FakeTI(run_id="r2")), "abc")}) == 3
    assert key != job_key(context(FakeTI()), "abd")
    assert ":" not in key and len(shard_key(key, attempt="t12g300", round=99, index=99_999)) < 512


def test_every_batch_tagged_with_the_job_is_found_oldest_first_and_no_other() -> None:
    job = job_key(context(FakeTI()), "abc")
    other = job_key(context(FakeTI(task_id="other")), "abc")
    newest_first = [
        batch("b4", shard_key(job, attempt="t2g3", round=1, index=3), created_at=40),
        batch("x1", shard_key(other, attempt="t1g0", round=0, index=0), created_at=35),
        batch("x2", job, created_at=30),  # the key alone, with nothing after it: not a job batch's tag
        batch("x3", None, created_at=25),
        batch("a2", shard_key(job, attempt="t1g0", round=0, index=10), status="expired", created_at=20),
        batch("z1", shard_key(job, attempt="t1g0", round=0, index=9), created_at=20),  # same second: by place
    ]
    found = find_job_batches(newest_first, job, tag=TAG)
    assert [b.id for b in found] == ["z1", "a2", "b4"]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("k:t1g0:0:3", 0), ("k:t2g4:3:0", 3), ("k:t2g4:x:0", 0), ("k", 0), (None, 0), ("k:a:1", 0)],
)
def test_the_round_is_read_from_the_tag(tag: str | None, expected: int) -> None:
    assert round_of(batch("b", tag), tag=TAG) == expected


def test_adopted_batches_stand_for_shards_and_failed_ones_are_left_out() -> None:
    found = [
        batch("b1", "k:t1g0:0:0"),
        batch("b2", "k:t1g0:0:1", status="failed"),
        batch("b3", "k:t1g0:1:2", status="in_progress"),
        batch("b4", "k:t1g0:1:3", status="validating", request_counts={"total": 0, "completed": 0, "failed": 0}),
    ]
    # A running batch's input size and requests count toward admission (a validating one reports no requests).
    shards = adopt(found, tag=TAG, sizes={"b3": 1234, "b4": 99}, lines={"b3": 4, "b4": 3})
    assert [(s.index, s.batch_id, s.round, s.reused, s.requests, s.bytes) for s in shards] == [
        (0, "b1", 0, True, 4, 0),
        (1, "b3", 1, True, 4, 1234),
        (2, "b4", 1, True, 3, 99),
    ]


def test_the_record_says_what_it_found() -> None:
    record = JobRecord(
        batches=(batch("b1", "k:a:0:0"), batch("b2", "k:a:0:1", status="in_progress")),
        answered=4,
        failed=1,
        inflight=4,
        unrun=3,
    )
    assert [b.id for b in record.running] == ["b2"] and record.running[0].status is BatchStatus.IN_PROGRESS
    assert record.describe() == (
        "2 batch(es) of this job found (1 completed, 1 in_progress): 4 line(s) answered, 1 failed for good, "
        "4 in flight, 3 to send"
    )
