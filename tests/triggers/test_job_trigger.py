"""OpenAIBatchJobTrigger against the emulator: one event for every shard, early on a failed shard, on_kill."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL
from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger
from tests._kit.batches import invalid_jsonl, new_batch, wait_for_status
from tests._kit.kill import task_now

POLL = 0.02


def make_trigger(batch_ids: list[str], **kwargs: Any) -> OpenAIBatchJobTrigger:
    kwargs.setdefault("poll_interval", POLL)
    return OpenAIBatchJobTrigger(conn_id="openai_default", batch_ids=batch_ids, **kwargs)


async def collect(trigger: OpenAIBatchJobTrigger, timeout: float = 15.0) -> list[dict[str, Any]]:
    async def drain() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(drain(), timeout)


def test_serializes_to_ids_only_and_rebuilds() -> None:
    trigger = make_trigger(["batch_a", "batch_b"], cancel_on_kill=True, requests=10)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == trigger.serialize()
    assert set(kwargs) == {
        "conn_id",
        "batch_ids",
        "poll_interval",
        "cancel_on_kill",
        "max_consecutive_errors",
        "requests",
        "plan",
        "max_retries",
        "wake_on_finish",
        "wake_at",
    }
    with pytest.raises(ValueError, match="at least one"):
        make_trigger([])


async def test_wake_on_finish_fires_when_one_shard_ends(openai_conn: EmulatorServer) -> None:
    held = new_batch(3, metadata={"emulator": "hold"}).id
    done = new_batch(2).id

    (event,) = await collect(make_trigger([held, done], wake_on_finish=True))

    statuses = {b["id"]: b["status"] for b in event["batches"]}
    assert event["status"] == EVENT_TERMINAL and statuses[done] == "completed"
    assert statuses[held] in ("validating", "in_progress")


async def test_wake_at_fires_with_nothing_to_wait_on(openai_conn: EmulatorServer) -> None:
    held = new_batch(3, metadata={"emulator": "hold"}).id
    (alone,) = await collect(make_trigger([], wake_at=0.0))
    (event,) = await collect(make_trigger([held], wake_at=0.0))

    assert alone == {"status": EVENT_TERMINAL, "batches": [], "plan": None}
    assert [b["id"] for b in event["batches"]] == [held]  # fired after one round although the batch runs


async def test_one_event_once_every_shard_is_terminal(
    openai_conn: EmulatorServer, capfd: pytest.CaptureFixture[str]
) -> None:
    ids = [new_batch(3).id, new_batch(2, failing=1).id, new_batch(4).id]

    events = await collect(make_trigger(ids, requests=9))

    (event,) = events
    assert event["status"] == EVENT_TERMINAL
    assert sorted(b["id"] for b in event["batches"]) == sorted(ids)
    assert {b["status"] for b in event["batches"]} == {"completed"}
    logged = "".join(capfd.readouterr())
    assert "Job: 3/3 shard batches finished (3 completed); 8 completed / 1 failed of 9 requests" in logged


async def test_a_failed_shard_fires_at_once_and_leaves_the_others_running(openai_conn: EmulatorServer) -> None:
    held = new_batch(3, metadata={"emulator": "hold"}).id
    bad = new_batch(content=invalid_jsonl()).id

    (event,) = await collect(make_trigger([held, bad]))

    statuses = {b["id"]: b["status"] for b in event["batches"]}
    assert statuses[bad] == "failed" and statuses[held] in ("validating", "in_progress")
    assert openai_conn.get_batch(held)["status"] == "in_progress"  # not cancelled: nobody asked


async def test_transient_errors_are_tolerated_and_permanent_ones_end_the_wait(openai_conn: EmulatorServer) -> None:
    batch_id = new_batch(2).id
    openai_conn.faults.add("GET /v1/batches/{id}", "status", status=503, times=3)

    (event,) = await collect(make_trigger([batch_id], max_retries=0))
    assert event["status"] == EVENT_TERMINAL

    (error,) = await collect(make_trigger([batch_id, "batch_gone"]))
    assert error["status"] == EVENT_ERROR and error["batch_id"] == "batch_gone" and not error["retryable"]


async def test_on_kill_cancels_every_unfinished_shard(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = new_batch(2).id
    wait_for_status(openai_conn, done, "completed")
    held = [new_batch(2, metadata={"emulator": "hold"}).id for _ in range(2)]
    trigger = make_trigger([done, *held], cancel_on_kill=True)
    task_now(trigger, monkeypatch, "failed")  # a user marked the deferred task failed
    task = asyncio.ensure_future(collect(trigger))
    for _ in range(500):
        if done in trigger._finished:
            break
        await asyncio.sleep(0.01)
    task.cancel()

    await trigger.on_kill()

    for batch_id in held:
        assert openai_conn.get_batch(batch_id)["status"] in ("cancelling", "cancelled")
    assert openai_conn.get_batch(done)["status"] == "completed"
    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 2


async def test_on_kill_of_a_moved_copy_cancels_no_shard_that_ended(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This copy never saw the shards end (another triggerer did, and the task went on): each is read first.
    done = [new_batch(2).id for _ in range(2)]
    for batch_id in done:
        wait_for_status(openai_conn, batch_id, "completed")
    held = new_batch(2, metadata={"emulator": "hold"}).id
    trigger = make_trigger([*done, held], cancel_on_kill=True)
    task_now(trigger, monkeypatch, "failed")

    await trigger.on_kill()

    assert [openai_conn.get_batch(b)["status"] for b in done] == ["completed", "completed"]
    assert openai_conn.get_batch(held)["status"] in ("cancelling", "cancelled")
    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 1


async def test_on_kill_does_nothing_without_cancel_on_kill(openai_conn: EmulatorServer) -> None:
    held = new_batch(2, metadata={"emulator": "hold"}).id
    await make_trigger([held]).on_kill()
    assert openai_conn.get_batch(held)["status"] != "cancelling"


@pytest.mark.parametrize("state", ["deferred", "unknown"])
async def test_on_kill_leaves_every_shard_alone_unless_the_task_was_killed(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    # Airflow 3.3 calls on_kill on a triggerer that lost the trigger to another one while the task is still
    # deferred; with no readable task state either, nothing is cancelled.
    held = running_batches(openai_conn, 2)
    trigger = make_trigger(held, cancel_on_kill=True)
    if state == "deferred":
        task_now(trigger, monkeypatch, "deferred")

    await trigger.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0
    assert {openai_conn.get_batch(batch_id)["status"] for batch_id in held} == {"in_progress"}


# -- HA: a stale copy's on_kill after the other copy woke the task (the same try) ------------------------------------


def running_batches(openai_conn: EmulatorServer, count: int) -> list[str]:
    """``count`` held batches, each ``in_progress`` already."""
    held = [new_batch(2, metadata={"emulator": "hold"}).id for _ in range(count)]
    for batch_id in held:
        wait_for_status(openai_conn, batch_id, "in_progress")
    return held


def assert_still_running(openai_conn: EmulatorServer, held: list[str]) -> None:
    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0
    assert {openai_conn.get_batch(batch_id)["status"] for batch_id in held} == {"in_progress"}


@pytest.mark.parametrize("state", ["scheduled", "queued", "running", "deferred", "up_for_retry"])
async def test_on_kill_of_a_stale_copy_leaves_the_shards_of_a_resumed_task_running(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    # The other triggerer's copy fired when a shard ended under admission; the task resumed in try 2 (and
    # submitted, re-deferred or failed for a retry). This copy never saw it and now runs on_kill.
    done = new_batch(2).id
    wait_for_status(openai_conn, done, "completed")
    held = running_batches(openai_conn, 2)
    trigger = make_trigger([done, *held], cancel_on_kill=True, wake_on_finish=True)
    task_now(trigger, monkeypatch, state, deferred_try=2)

    await trigger.on_kill()

    assert_still_running(openai_conn, held)


@pytest.mark.parametrize("wake", ["failed_shard", "wake_on_finish", "wake_at"])
@pytest.mark.parametrize("state", ["failed", "success", "running"])
async def test_on_kill_of_a_stale_copy_leaves_the_shards_of_a_task_that_resumed_after_a_wake_up(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, wake: str, state: str
) -> None:
    # The other copy fired (a shard failed, one ended under admission, a back-off or the deadline came); the task
    # resumed in the same try and runs, or ended on its own, leaving the shards running for a retry or a clear.
    held = running_batches(openai_conn, 2)
    kwargs: dict[str, Any] = {"cancel_on_kill": True}
    others: list[str] = []
    if wake == "failed_shard":
        others = [new_batch(content=invalid_jsonl()).id]
        wait_for_status(openai_conn, others[0], "failed")
    elif wake == "wake_on_finish":
        others = [new_batch(2).id]
        wait_for_status(openai_conn, others[0], "completed")
        kwargs["wake_on_finish"] = True
    else:
        kwargs["wake_at"] = 1.0  # long past
    trigger = make_trigger([*others, *held], **kwargs)
    task_now(trigger, monkeypatch, state)
    openai_conn.reset_counters()

    await trigger.on_kill()

    # Read until the condition to fire holds: the ended shard (listed first) only, or none once wake_at passed.
    assert openai_conn.counters["GET /v1/batches/{id}"] == len(others)
    assert_still_running(openai_conn, held)


@pytest.mark.parametrize(("state", "wake_on_finish"), [("failed", True), ("success", False), ("running", True)])
async def test_on_kill_cancels_the_running_shards_of_a_killed_task(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, state: str, wake_on_finish: bool
) -> None:
    # Marked failed or success while every shard ran (nothing for any copy to fire on), or cleared and running
    # again in a new try (no copy fired to resume it): the same admission trigger now cancels.
    held = running_batches(openai_conn, 2)
    trigger = make_trigger(held, cancel_on_kill=True, wake_on_finish=wake_on_finish)
    task_now(trigger, monkeypatch, state, deferred_try=2)

    await trigger.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 2
    assert {openai_conn.get_batch(batch_id)["status"] for batch_id in held} <= {"cancelling", "cancelled"}
