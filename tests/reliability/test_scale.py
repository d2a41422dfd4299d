"""Scale: paging through 10,000 batches, and 200 triggers waiting in one event loop while faults are injected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY, OpenAIBatchHook
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests._kit.connection import set_connection
from tests._kit.reliability import REGISTRY


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=0.3) as server:
        set_connection(monkeypatch, server.base_url, timeout=1, max_retries=3)
        yield server


def test_iterating_10000_batches_through_pages_with_faults(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page count is asserted exactly, so a page slowed past the read timeout by a busy machine (and
    # retried) must not count twice: no fault here needs a short timeout (drops and truncations fail at once).
    set_connection(monkeypatch, emu.base_url, timeout=30, max_retries=3)
    ids = emu.seed_batches(10_000)
    expected = list(reversed(ids))  # newest first
    hook = OpenAIBatchHook()

    started = time.monotonic()
    seen = [batch.id for batch in hook.iter_batches(page_size=100)]
    clean_seconds = time.monotonic() - started
    assert seen == expected
    assert emu.counters["GET /v1/batches"] == 100

    # Again, with pages failing along the way: every batch once, in order, nothing skipped or repeated.
    rules = [
        emu.faults.add("GET /v1/batches", "status", status=503, after=10, times=2),
        emu.faults.add("GET /v1/batches", "status", status=429, retry_after_ms=20, after=30, times=1),
        emu.faults.add("GET /v1/batches", "drop", after=50, times=1),
        emu.faults.add("GET /v1/batches", "truncated", after=70, times=1),
        emu.faults.add("GET /v1/batches", "not_json", after=90, times=1),
    ]
    seen = [batch.id for batch in hook.iter_batches(page_size=100)]
    fired = sum(rule.fired for rule in rules)
    REGISTRY.injections += fired
    assert fired == 6
    assert seen == expected and len(set(seen)) == 10_000

    # The idempotency lookup scans a bounded window: found inside it, not past it.
    tagged = emu.seed_batches(1, metadata={IDEMPOTENCY_METADATA_KEY: "needle"})[0]
    emu.seed_batches(500)
    assert (found := hook.find_batch_by_idempotency_key("needle")) is not None and found.id == tagged
    emu.seed_batches(600)
    assert hook.find_batch_by_idempotency_key("needle") is None  # past the 1,000 newest, by design
    REGISTRY.notes.append(f"scale: 10,000 batches listed in 100 pages in {clean_seconds:.1f}s")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("status_polling", ["retrieve", "auto"])
def test_200_triggers_in_one_loop_with_faults(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch, status_polling: str
) -> None:
    """Every trigger ends with its own batch, whether the statuses come one by one or in list pages."""
    set_connection(monkeypatch, emu.base_url, timeout=1, max_retries=3, status_polling=status_polling)
    ids = emu.seed_batches(200)
    if status_polling == "retrieve":
        emu.set_phase_seconds(0.5)
        route = "GET /v1/batches/{id}"
        schedule = [(20, 25), (60, 20), (100, 20), (140, 15), (170, 15), (200, 15), (230, 5)]
    else:  # 200 batches: two list pages a round, so far fewer requests to spread the faults over
        emu.set_phase_seconds(1.0)
        route = "GET /v1/batches"
        schedule = [(1, 2), (4, 1), (6, 1), (8, 1), (10, 1), (12, 1), (14, 1)]
    kinds: list[dict[str, Any]] = [
        {"kind": "status", "status": 503},
        {"kind": "drop"},
        {"kind": "status", "status": 429, "retry_after_ms": 50},
        {"kind": "truncated"},
        {"kind": "not_json"},
        {"kind": "status", "status": 502},
        {"kind": "latency", "latency": 1.3},  # past the 1 s read timeout
    ]
    rules = [
        emu.faults.add(route, fault.pop("kind"), after=after, times=times, **fault)
        for fault, (after, times) in zip(kinds, schedule, strict=True)
    ]

    async def first_event(batch_id: str) -> dict[str, Any]:
        trigger = OpenAIBatchTrigger(conn_id="openai_default", batch_id=batch_id, poll_interval=0.2)
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError(f"the trigger of {batch_id} ended without an event")

    async def all_events() -> list[dict[str, Any]]:
        return await asyncio.wait_for(asyncio.gather(*(first_event(b) for b in ids)), timeout=120)

    started = time.monotonic()
    events = asyncio.run(all_events())
    elapsed = time.monotonic() - started
    fired = sum(rule.fired for rule in rules)
    REGISTRY.injections += fired
    polls = emu.counters[route] + (emu.counters["GET /v1/batches/{id}"] if route == "GET /v1/batches" else 0)

    assert len(events) == 200
    for batch_id, event in zip(ids, events, strict=True):
        final = emu.get_batch(batch_id)
        assert event["status"] == "terminal", event
        assert event["batch_id"] == batch_id and event["batch"]["id"] == batch_id
        assert event["batch"]["status"] == "completed" == final["status"]
        assert event["batch"]["output_file_id"] == final["output_file_id"] is not None
    assert all(rule.fired > 0 for rule in rules), (polls, [(r.kind, r.status, r.fired) for r in rules])
    REGISTRY.notes.append(
        f"scale: 200 triggers ({status_polling}), {polls} requests, {fired} faults injected ({fired / polls:.0%}), "
        f"all completed correctly in {elapsed:.1f}s"
    )
