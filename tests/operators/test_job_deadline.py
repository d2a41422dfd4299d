"""OpenAIBatchJobOperator(deadline=..., on_deadline=...) against the emulator: batches stalled at 60 % are
cancelled at the deadline (the job's own only), then the job fails with the counts or merges what exists.

The job (and its trigger) read a clock the test controls (:class:`tests._kit.clock.JumpClock`): real time until
every shard batch has stalled, then an hour later. So the deadline, half an hour ahead, passes exactly once the
emulator is in the state the test is about, whatever the machine's load, and no test sleeps for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger
from tests._kit.airflow_compat import AirflowFailException, TaskDeferred
from tests._kit.batches import new_batch, wait_for_status, write_jsonl
from tests._kit.clock import JumpClock
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op, run_trigger
from tests._kit.ti import FakeTI, context

#: Two shards of 10 requests; the emulator stalls every batch once 60 % of its requests are done.
LINES, PER_SHARD = 20, 10
STALL = {"emulator": "stall=60"}
#: Seconds from the task's start to the deadline, on the job's clock (it jumps an hour once the shards stall).
AHEAD = 1800.0


def deadline_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def stalled(emulator: EmulatorServer, shards: int = LINES // PER_SHARD) -> Callable[[], bool]:
    """Whether the job's ``shards`` batches exist and have all stalled at 60 % (6 of 10 done)."""

    def check() -> bool:
        ours = [b for b in emulator.batches.values() if (b.get("metadata") or {}).get("emulator") == STALL["emulator"]]
        done = [b["request_counts"]["completed"] for b in ours if b["status"] == "in_progress"]
        return len(ours) == shards and done == [PER_SHARD * 6 // 10] * shards

    return check


def deferred_stalled(deadline: Any, **more: Any) -> dict[str, Any]:
    """The arguments of a deferrable job of stalled shards, with this deadline."""
    return {"max_requests_per_batch": PER_SHARD, "metadata": STALL, "deferrable": True, "deadline": deadline, **more}


def error_codes(path: str | Path) -> list[str]:
    return [json.loads(line)["error"]["code"] for line in Path(path).read_text().splitlines()]


def assert_partial_at_deadline(emulator: EmulatorServer, manifest: dict[str, Any], deadline: datetime) -> None:
    """60 % of each shard merged in input order, the other 40 % in the error file as deadline_exceeded.

    The emulator runs a batch's requests in the order of their ids' hashes: which 6 of a shard's 10 are done
    is fixed, but not the first 6.
    """
    answered, unanswered = ids_of(manifest["output"]["path"]), ids_of(manifest["error"]["path"])
    number = {f"req-{i}": i for i in range(LINES)}
    assert answered == sorted(answered, key=number.__getitem__)  # input order
    assert unanswered == sorted(unanswered, key=number.__getitem__)
    assert sorted(answered + unanswered, key=number.__getitem__) == list(number)
    for shard in range(LINES // PER_SHARD):
        assert sum(1 for line in answered if number[line] // PER_SHARD == shard) == 6
    assert error_codes(manifest["error"]["path"]) == ["deadline_exceeded"] * 8
    assert manifest["errors_by_code"] == {"deadline_exceeded": 8}
    assert manifest["verdict"] == "succeed" and manifest["reason"] == "deadline"
    batch_ids = [shard["batch_id"] for shard in manifest["shards"]]
    assert [shard["status"] for shard in manifest["shards"]] == ["cancelled", "cancelled"]
    report = manifest["deadline"]
    assert report["hit"] and report["on_deadline"] == "partial" and report["cancelled"] == batch_ids
    assert report["lines"] == 8 and report["not_submitted"] == {"shards": 0, "requests": 0}
    # Cancelled at the deadline, not before: the job's clock passed it only once every shard had stalled.
    assert report["hit_at"] is not None and datetime.fromisoformat(report["hit_at"]) >= deadline.replace(microsecond=0)


def test_stalled_at_60_percent_partial_merges_what_exists_at_the_deadline(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", LINES)
    other = new_batch(4, metadata={"emulator": "hold"})  # not the job's: never cancelled by it
    deadline = deadline_in(AHEAD)
    clock = JumpClock(stalled(openai_conn))
    op = job_op(tmp_path, max_requests_per_batch=PER_SHARD, metadata=STALL, deadline=deadline, on_deadline="partial")

    manifest = clock.attach(op).execute(context())

    assert clock.jumped and clock.now() >= deadline.timestamp()  # a stalled job cannot end before its deadline
    assert_partial_at_deadline(openai_conn, manifest, deadline)
    assert openai_conn.get_batch(other.id)["status"] == "in_progress"
    assert openai_conn.counters.batches_created == 3  # no shard or round after the deadline


@pytest.mark.parametrize("settle", [True, False], ids=["cancels-settle-in-the-worker", "cancels-waited-deferred"])
def test_deferred_job_wakes_at_its_deadline_cancels_waits_through_cancelling_and_merges(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settle: bool
) -> None:
    # Right after its cancels the job waits a little in the worker (they usually end in seconds) rather than
    # defer and resume at once; with no time for that it defers again and its trigger waits through cancelling.
    if not settle:
        monkeypatch.setattr("airflow_provider_openai_batch.operators._job_run.SETTLE_CANCELS_SECONDS", 0.0)
    write_jsonl(tmp_path / "in.jsonl", LINES)
    deadline = deadline_in(AHEAD)
    kwargs = deferred_stalled(deadline.isoformat(), on_deadline="partial")  # as a template renders it
    ti = FakeTI()
    clock = JumpClock(stalled(openai_conn))
    clock.patch_triggers(monkeypatch)

    with pytest.raises(TaskDeferred) as first:
        clock.attach(job_op(tmp_path, **kwargs)).execute(context(ti))
    trigger = first.value.trigger
    assert isinstance(trigger, OpenAIBatchJobTrigger)
    assert trigger.wake_at == pytest.approx(deadline.timestamp(), abs=1e-3) and len(trigger.batch_ids) == 2
    (woken,) = run_trigger(trigger)  # the stalled batches never end: it fires at the deadline
    assert clock.jumped and clock.now() >= deadline.timestamp()
    assert {b["status"] for b in woken["batches"]} == {"in_progress"}

    if settle:
        manifest = clock.attach(job_op(tmp_path, **kwargs)).execute_complete(context(ti), woken)
    else:
        with pytest.raises(TaskDeferred) as second:  # cancels, then waits for the cancelling batches
            clock.attach(job_op(tmp_path, **kwargs)).execute_complete(context(ti), woken)
        again = second.value.trigger
        assert isinstance(again, OpenAIBatchJobTrigger)
        assert again.wake_at is None and not again.wake_on_finish and again.batch_ids == trigger.batch_ids
        assert {openai_conn.get_batch(b)["status"] for b in again.batch_ids} <= {"cancelling", "cancelled"}
        (ended,) = run_trigger(again)
        manifest = clock.attach(job_op(tmp_path, **kwargs)).execute_complete(context(ti), ended)

    assert_partial_at_deadline(openai_conn, manifest, deadline)
    assert ti.xcoms["manifest"] == manifest


def test_on_deadline_fail_cancels_the_jobs_batches_and_fails_with_the_counts(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", LINES)
    other = new_batch(4, metadata={"emulator": "hold"})
    deadline = deadline_in(AHEAD)
    ti = FakeTI()

    clock = JumpClock(stalled(openai_conn))
    op = job_op(tmp_path, max_requests_per_batch=PER_SHARD, metadata=STALL, deadline=deadline)

    with pytest.raises(AirflowFailException, match="2 running batch") as info:
        clock.attach(op).execute(context(ti))

    assert "12 of 20 requests answered" in str(info.value) and "on_deadline='fail'" in str(info.value)
    assert clock.jumped and clock.now() >= deadline.timestamp()
    manifest = ti.xcoms["manifest"]
    assert manifest["verdict"] == "fail" and manifest["reason"] == "deadline_exceeded"
    assert manifest["output"] is None and not list((tmp_path / "out").glob("*.jsonl"))  # nothing merged
    assert manifest["deadline"]["cancelled"] == ti.xcoms["batch_ids"] and manifest["deadline"]["on_deadline"] == "fail"
    for batch_id in ti.xcoms["batch_ids"]:
        wait_for_status(openai_conn, batch_id, "cancelled")
    assert openai_conn.get_batch(other.id)["status"] == "in_progress"  # only the job's own


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_deadline_already_past_fails_before_any_upload(
    openai_conn: EmulatorServer, tmp_path: Path, deferrable: bool
) -> None:
    write_jsonl(tmp_path / "in.jsonl", LINES)
    past = deadline_in(-60)

    with pytest.raises(AirflowFailException, match="nothing was uploaded"):
        job_op(tmp_path, deadline=past, deferrable=deferrable, on_deadline="partial").execute(context())

    assert openai_conn.counters.files_uploaded == 0 and not openai_conn.batches


def test_a_duration_counts_from_the_dag_runs_start(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", LINES)
    run = SimpleNamespace(start_date=datetime.now(timezone.utc) - timedelta(minutes=10))
    ctx = {**context(), "dag_run": run}

    with pytest.raises(AirflowFailException, match="nothing was uploaded"):  # 5 min from a start 10 min ago
        job_op(tmp_path, deadline=timedelta(minutes=5)).execute(ctx)
    assert openai_conn.counters.files_uploaded == 0

    manifest = job_op(tmp_path, task_id="later", deadline="PT20M").execute(
        {**context(FakeTI(task_id="later")), "dag_run": run}
    )
    at = datetime.fromisoformat(manifest["deadline"]["at"])
    assert at == (run.start_date + timedelta(minutes=20)).replace(microsecond=0)
    assert manifest["deadline"]["hit"] is False and manifest["reason"] == "completed"


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        ("tomorrow", "neither a date-time"),
        ("P1M", "years and months"),
        ("2030-01-01T00:00:00", "no time zone"),
        ("-5", "positive"),
        ("PT0S", "positive"),
    ],
)
def test_a_bad_rendered_deadline_fails_before_any_upload(
    openai_conn: EmulatorServer, tmp_path: Path, deadline: str, message: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 4)

    with pytest.raises(ValueError, match=message):
        job_op(tmp_path, deadline=deadline).execute(context())

    assert openai_conn.counters.files_uploaded == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deadline": -1}, "positive"),
        ({"deadline": timedelta(0)}, "positive"),
        ({"deadline": datetime(2030, 1, 1)}, "no time zone"),
        ({"deadline": True}, "datetime, a duration or seconds"),
        ({"deadline": 60, "on_deadline": "cancel"}, "on_deadline must be one of 'fail', 'partial'"),
    ],
)
def test_bad_deadline_arguments_are_refused_when_the_dag_is_parsed(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        job_op(tmp_path, **kwargs)


def test_shards_waiting_for_capacity_at_the_deadline_are_given_up(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", LINES)
    lines = (tmp_path / "in.jsonl").read_bytes().splitlines(keepends=True)
    sizes = [sum(map(len, lines[i : i + PER_SHARD])) for i in range(0, LINES, PER_SHARD)]
    one_shard = max(sizes)  # room for one shard in flight, never two
    assert one_shard < 2 * min(sizes)
    deadline = deadline_in(AHEAD)
    clock = JumpClock(stalled(openai_conn, shards=1))

    manifest = clock.attach(
        job_op(
            tmp_path,
            max_requests_per_batch=PER_SHARD,
            max_enqueued_tokens=one_shard,
            metadata=STALL,
            deadline=deadline,
            on_deadline="partial",
        )
    ).execute(context())

    assert openai_conn.counters.batches_created == 1  # the second shard waited for capacity, then gave up
    assert manifest["deadline"]["not_submitted"] == {"shards": 1, "requests": 10}
    assert len(ids_of(manifest["output"]["path"])) == 6
    assert error_codes(manifest["error"]["path"]) == ["deadline_exceeded"] * 14
    assert manifest["deadline"]["lines"] == 14 and manifest["reason"] == "deadline"


def test_a_retry_past_the_deadline_cancels_the_shard_batches_an_earlier_try_left_running(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", LINES)
    deadline = deadline_in(AHEAD)
    kwargs = deferred_stalled(deadline)
    with pytest.raises(TaskDeferred):  # the first try defers, then is lost (say its trigger gave up for a while)
        job_op(tmp_path, **kwargs).execute(context(FakeTI()))
    earlier = list(openai_conn.batches)
    other = new_batch(4, metadata={"emulator": "hold"})  # not the job's
    uploads = openai_conn.counters.files_uploaded
    later = JumpClock()  # the second try starts past the deadline

    with pytest.raises(AirflowFailException, match="cancelled 2 batch") as info:
        later.attach(job_op(tmp_path, **kwargs)).execute(context(FakeTI(try_number=2)))

    assert "nothing was uploaded" in str(info.value) and all(b in str(info.value) for b in earlier)
    assert openai_conn.counters.files_uploaded == uploads and len(openai_conn.batches) == 3
    for batch_id in earlier:
        wait_for_status(openai_conn, batch_id, "cancelled")
    assert openai_conn.get_batch(other.id)["status"] == "in_progress"


def test_a_cancel_that_keeps_failing_is_asked_again_once_per_poll_interval(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    # The service refuses every cancel (400): the job asks again each poll interval, never in a tight loop, and
    # gives up when its batches end on their own (here they are not stalled: they complete).
    write_jsonl(tmp_path / "in.jsonl", LINES)
    openai_conn.faults.add("POST /v1/batches/{id}/cancel", "status", status=400, times=None)
    deadline = deadline_in(AHEAD)
    clock = JumpClock(lambda: openai_conn.counters.batches_created == 2)
    op = job_op(tmp_path, max_requests_per_batch=PER_SHARD, deadline=deadline, on_deadline="partial")
    started = time.monotonic()

    manifest = clock.attach(op).execute(context())

    cancels = openai_conn.counters["POST /v1/batches/{id}/cancel"]
    polls = (time.monotonic() - started) / op.poll_interval
    assert 2 <= cancels <= 2 * (polls + 2), (cancels, polls)  # one round per interval at most, two batches each
    assert manifest["deadline"]["hit"] and manifest["deadline"]["cancelled"] == []
    assert manifest["verdict"] == "succeed" and len(ids_of(manifest["output"]["path"])) == LINES
