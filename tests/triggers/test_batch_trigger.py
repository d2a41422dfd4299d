"""OpenAIBatchTrigger against the emulator: serialization, events, error tolerance, keep-alive, on_kill."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.triggers._poller import MAX_LEAD
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL, OpenAIBatchTrigger
from tests._kit.batches import batch_in_status, invalid_jsonl, new_batch, wait_for_status
from tests._kit.kill import task_now

POLL = 0.02
GET_BATCH = "GET /v1/batches/{id}"


def make_trigger(batch_id: str, **kwargs: Any) -> OpenAIBatchTrigger:
    kwargs.setdefault("poll_interval", POLL)
    return OpenAIBatchTrigger(conn_id=kwargs.pop("conn_id", "openai_default"), batch_id=batch_id, **kwargs)


async def collect(trigger: OpenAIBatchTrigger, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every event the trigger yields until ``run()`` returns (so 'exactly one' is checked, not assumed)."""

    async def drain() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(drain(), timeout)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def rebuild(trigger: OpenAIBatchTrigger) -> OpenAIBatchTrigger:
    """What the triggerer does: import the classpath, call it with the stored (JSON) kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**json.loads(json.dumps(kwargs)))  # type: ignore[no-any-return]


@pytest.fixture
def seen_statuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the status of every batch the async hook returns."""
    seen: list[str] = []
    original = OpenAIBatchHook.aretrieve_batch

    async def recording(self: OpenAIBatchHook, batch_id: str) -> Batch:
        batch = await original(self, batch_id)
        seen.append(batch.status.value)
        return batch

    monkeypatch.setattr(OpenAIBatchHook, "aretrieve_batch", recording)
    return seen


# -- serialization -------------------------------------------------------------------------------


def test_serialize_round_trip_holds_no_secret(openai_conn: EmulatorServer) -> None:
    trigger = OpenAIBatchTrigger(
        conn_id="openai_default",
        batch_id="batch_abc",
        poll_interval=12.5,
        cancel_on_kill=True,
        max_consecutive_errors=4,
        max_retries=1,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_openai_batch.triggers.batch.OpenAIBatchTrigger"
    assert kwargs == {
        "conn_id": "openai_default",
        "batch_id": "batch_abc",
        "poll_interval": 12.5,
        "cancel_on_kill": True,
        "max_consecutive_errors": 4,
        "max_retries": 1,
    }
    assert "sk-emulator" not in repr(kwargs)
    assert "sk-emulator" not in json.dumps(kwargs)
    rebuilt = rebuild(trigger)
    assert type(rebuilt) is OpenAIBatchTrigger
    assert rebuilt.serialize() == (classpath, kwargs)


async def test_rebuilt_trigger_resumes_polling_the_same_batch(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    first = make_trigger(batch.id)
    # The triggerer stops the first instance (restart / redistribution) while the batch is still running.
    running = asyncio.ensure_future(collect(first, timeout=30))
    await until(lambda: openai_conn.counters[GET_BATCH] >= 2)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    polled = openai_conn.counters[GET_BATCH]
    openai_conn.store.cancel_batch(batch.id)

    events = await collect(rebuild(first))

    assert openai_conn.counters[GET_BATCH] > polled
    assert len(events) == 1
    assert events[0]["status"] == EVENT_TERMINAL
    assert events[0]["batch_id"] == batch.id
    assert events[0]["batch"]["id"] == batch.id
    assert events[0]["batch"]["status"] == "cancelled"


# -- one event per terminal status -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
async def test_one_json_event_for_every_terminal_status(
    openai_conn: EmulatorServer, seen_statuses: list[str], status: str
) -> None:
    openai_conn.set_phase_seconds(0.25)  # long enough that the first poll surely sees the batch running
    if status == "cancelled":
        batch = new_batch(4, metadata={"emulator": "hold"})
    elif status == "failed":
        batch = new_batch(content=invalid_jsonl())
    elif status == "expired":
        batch = new_batch(4, metadata={"emulator": "expire"})
    else:
        batch = new_batch(4, failing=1)
    task = asyncio.create_task(collect(make_trigger(batch.id)))
    if status == "cancelled":
        await asyncio.to_thread(wait_for_status, openai_conn, batch.id, "in_progress")
        await asyncio.sleep(0.3)
        openai_conn.store.cancel_batch(batch.id)

    events = await task

    assert len(events) == 1, events
    event = events[0]
    assert json.loads(json.dumps(event)) == event  # plain JSON, as trigger events are stored
    assert event["status"] == EVENT_TERMINAL
    assert event["batch_id"] == batch.id
    carried = Batch.from_dict(event["batch"])
    assert carried.status.value == status
    assert carried.id == batch.id
    # The trigger polled while the batch ran and stopped at the first terminal status.
    assert len(seen_statuses) >= 2
    assert seen_statuses[-1] == status
    assert all(s not in ("completed", "failed", "expired", "cancelled") for s in seen_statuses[:-1])
    if status == "completed":
        assert carried.request_counts.to_dict() == {"total": 4, "completed": 3, "failed": 1}
        assert carried.output_file_id and carried.error_file_id
    if status == "failed":
        assert carried.errors is not None and carried.errors.data[0].line == 2


async def test_cancelling_is_not_terminal(openai_conn: EmulatorServer, seen_statuses: list[str]) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")
    openai_conn.set_phase_seconds(0.4)  # cancelling now lasts 0.4 s: several polls see it
    task = asyncio.create_task(collect(make_trigger(batch.id)))
    await asyncio.sleep(0.1)
    assert not task.done()
    openai_conn.store.cancel_batch(batch.id)

    events = await task

    assert seen_statuses.count("cancelling") >= 3
    assert seen_statuses[-1] == "cancelled"
    assert [e["batch"]["status"] for e in events] == ["cancelled"]


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["status", "drop"])
async def test_transient_errors_are_tolerated(openai_conn: EmulatorServer, kind: str) -> None:
    batch = new_batch(4)
    # max_retries=0: every failure reaches the trigger's own budget, not only the hook's retries.
    rule = openai_conn.faults.add(GET_BATCH, kind, status=503 if kind == "status" else None, times=4)

    events = await collect(make_trigger(batch.id, max_retries=0, max_consecutive_errors=5))

    assert rule.fired == 4
    assert len(events) == 1
    assert events[0]["status"] == EVENT_TERMINAL
    assert events[0]["batch"]["status"] == "completed"


async def test_transient_errors_are_reset_by_a_successful_poll(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    # 2 failures, 1 success, 2 failures ... never more than 2 in a row, with a budget of 2.
    for after in (0, 3, 6):
        openai_conn.faults.add(GET_BATCH, "status", status=503, times=2, after=after)
    task = asyncio.create_task(collect(make_trigger(batch.id, max_retries=0, max_consecutive_errors=2)))
    await until(lambda: openai_conn.counters[GET_BATCH] >= 10)
    openai_conn.store.cancel_batch(batch.id)
    events = await task
    assert [e["status"] for e in events] == [EVENT_TERMINAL]


async def test_too_many_consecutive_transient_errors_give_a_retryable_error_event(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4)
    openai_conn.reset_counters()
    openai_conn.faults.add(GET_BATCH, "status", status=503, times=None)

    events = await collect(make_trigger(batch.id, max_retries=0, max_consecutive_errors=3))

    assert len(events) == 1
    event = events[0]
    assert json.loads(json.dumps(event)) == event
    assert event["status"] == EVENT_ERROR
    assert event["retryable"] is True
    assert event["batch_id"] == batch.id
    assert event["error_type"] == "ServerError"
    assert "503" in event["message"] and "too many consecutive" in event["message"]
    assert openai_conn.counters[GET_BATCH] == 4  # 3 tolerated + the one that ended it


async def test_wrong_api_key_fails_fast(openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_WRONG",
        json.dumps({"conn_type": "openai_batch", "password": "sk-wrong-key-123", "host": openai_conn.base_url}),
    )
    events = await collect(make_trigger("batch_abc", conn_id="openai_wrong"))

    assert len(events) == 1
    assert events[0]["status"] == EVENT_ERROR
    assert events[0]["retryable"] is False
    assert events[0]["error_type"] == "AuthenticationError"
    assert "sk-wrong-key-123" not in json.dumps(events[0])
    assert openai_conn.counters[GET_BATCH] == 1


async def test_unknown_batch_fails_fast(openai_conn: EmulatorServer) -> None:
    events = await collect(make_trigger("batch_does_not_exist"))

    assert len(events) == 1
    assert events[0]["status"] == EVENT_ERROR
    assert events[0]["retryable"] is False
    assert events[0]["error_type"] == "NotFoundError"
    assert "batch_does_not_exist" in events[0]["message"]
    assert openai_conn.counters[GET_BATCH] == 1


# -- connection reuse ----------------------------------------------------------------------------------


async def test_polls_reuse_one_connection(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    openai_conn.reset_counters()
    task = asyncio.create_task(collect(make_trigger(batch.id, poll_interval=0.005)))
    await until(lambda: openai_conn.counters[GET_BATCH] >= 20)
    openai_conn.store.cancel_batch(batch.id)
    await task
    counters = openai_conn.counters
    assert counters[GET_BATCH] >= 20
    assert counters["connections"] <= 2, counters.as_dict()


async def test_run_closes_its_client(openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    original = OpenAIBatchHook.aclose

    async def recording(self: OpenAIBatchHook) -> None:
        closed.append(self._async_client is not None)
        await original(self)

    monkeypatch.setattr(OpenAIBatchHook, "aclose", recording)
    batch = batch_in_status(openai_conn, "completed")
    await collect(make_trigger(batch.id))
    assert closed == [True]


# -- on_kill ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "map_index"),
    [("failed", -1), ("success", -1), (None, -1), ("failed", 3), ("scheduled", -1), ("running", 3)],
)
async def test_on_kill_cancels_the_batch_when_the_task_was_killed(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, state: str | None, map_index: int
) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")
    trigger = make_trigger(batch.id, cancel_on_kill=True)
    # Marked failed / success, or cleared (None), or cleared and re-queued already: with the batch running, no
    # copy of the trigger fired to resume the task.
    asked = task_now(trigger, monkeypatch, state, map_index)

    await trigger.on_kill()

    assert asked == [
        {"dag_id": "dag", "task_ids": ["task"], "run_ids": ["run_1"], "map_index": None if map_index < 0 else map_index}
    ]

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 1
    assert openai_conn.get_batch(batch.id)["status"] in ("cancelling", "cancelled")


@pytest.mark.parametrize("state", ["deferred", "up_for_retry", "up_for_reschedule"])
async def test_on_kill_leaves_the_batch_alone_when_the_task_still_waits(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    # Airflow 3.3 calls on_kill on a triggerer that lost the trigger to another one: the task is still deferred
    # (or resumed from the other copy and failed on its own, for a retry that may reuse the batch).
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")
    trigger = make_trigger(batch.id, cancel_on_kill=True)
    task_now(trigger, monkeypatch, state)

    await trigger.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0
    assert openai_conn.get_batch(batch.id)["status"] == "in_progress"


@pytest.mark.parametrize("why", ["no_task_instance", "lookup_fails", "task_not_found"])
async def test_on_kill_leaves_the_batch_alone_when_the_task_state_is_unknown(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")
    trigger = make_trigger(batch.id, cancel_on_kill=True)
    if why != "no_task_instance":
        task_now(trigger, monkeypatch, "failed")

        def broken(**_: Any) -> dict[str, Any]:
            if why == "lookup_fails":
                raise RuntimeError("API server unreachable")
            return {}

        monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(broken))

    await trigger.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0


async def test_on_kill_leaves_the_batch_alone_by_default(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")

    await make_trigger(batch.id).on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0
    assert openai_conn.get_batch(batch.id)["status"] == "in_progress"


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
@pytest.mark.parametrize("task_state", ["success", "failed", "scheduled", "running"])
async def test_on_kill_leaves_a_batch_that_ended_alone(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch, status: str, task_state: str
) -> None:
    # A stale copy of a trigger that moved to another triggerer: the other copy saw the batch end and the task
    # finished with it, so the state reads like a kill. The batch is read first and never sent a cancel.
    batch = batch_in_status(openai_conn, status)
    trigger = make_trigger(batch.id, cancel_on_kill=True)
    task_now(trigger, monkeypatch, task_state)

    await trigger.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0
    assert openai_conn.get_batch(batch.id)["status"] == status


async def test_cancelled_run_is_not_swallowed(openai_conn: EmulatorServer) -> None:
    """The triggerer cancels run() on shutdown: CancelledError must propagate, with no event."""
    batch = new_batch(4, metadata={"emulator": "hold"})
    events: list[Any] = []

    async def run() -> None:
        agen: AsyncIterator[Any] = make_trigger(batch.id).run()
        async for event in agen:
            events.append(event)

    task = asyncio.create_task(run())
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == []


async def test_polls_keep_their_cadence_through_a_slow_server(openai_conn: EmulatorServer) -> None:
    """A 0.3 s server does not stretch 0.5 s to 0.8 s: each poll starts one interval after the previous one started,
    early by that poll's length up to a quarter interval (so that a status is at most one interval old)."""
    batch_id = new_batch(metadata={"emulator": "hold"}).id
    openai_conn.faults.add(GET_BATCH, "latency", latency=0.3, times=None)
    starts: list[float] = []
    original = OpenAIBatchHook.aretrieve_batch

    async def timed(self: OpenAIBatchHook, batch_id: str) -> Batch:
        starts.append(asyncio.get_running_loop().time())
        return await original(self, batch_id)

    trigger = make_trigger(batch_id, poll_interval=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OpenAIBatchHook, "aretrieve_batch", timed)
        task = asyncio.ensure_future(collect(trigger, timeout=30))
        await until(lambda: len(starts) >= 7, timeout=20)
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(starts)][1:]  # the first round brings none forward
    expected = 0.5 * (1 - MAX_LEAD)  # every poll takes longer than the lead's cap
    # A busy machine only delays polls, so the floor holds; the ceiling sits halfway between an interval and the
    # stretched cadence (0.8 s) that this guards against. The lead's exact size is pinned by the schedule's
    # pure tests (test_poller.py), which no clock can break.
    assert expected - 0.06 <= sum(gaps) / len(gaps) <= 0.65, gaps


async def test_trigger_keeps_its_connection_alive_past_the_poll_interval(openai_conn: EmulatorServer) -> None:
    """httpx closes idle connections after 5 s by default; a trigger polling every 60 s must not reconnect each time."""
    hook = make_trigger("batch_x", poll_interval=60)._hook()
    client, _ = await hook._aclient()
    try:
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry > 60 * 1.1
    finally:
        await hook.aclose()
