"""Coalesced polling against the emulator: requests per round, fallback, and isolation between triggers.

Triggers of one connection share one client and one poller (``triggers/_shared.py``, ``triggers/_poller.py``);
these tests count the requests the emulator receives and check that every trigger still gets its own batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import AuthenticationError, NotFoundError
from airflow_provider_openai_batch.triggers import _shared
from airflow_provider_openai_batch.triggers._poller import MAX_LEAD, next_round_at
from airflow_provider_openai_batch.triggers._shared import Subscription, subscribe
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL, OpenAIBatchTrigger
from tests._kit.connection import set_connection

LIST = "GET /v1/batches"
RETRIEVE = "GET /v1/batches/{id}"
POLL = 0.05


@pytest.fixture
def held(openai_conn: EmulatorServer) -> Iterator[EmulatorServer]:
    """The emulator with no latency between phases; seeded batches are held until cancelled."""
    openai_conn.set_phase_seconds(0.01)
    yield openai_conn


def seed(server: EmulatorServer, n: int) -> list[str]:
    """``n`` running batches, newest first (as the list returns them)."""
    return list(reversed(server.seed_batches(n, metadata={"emulator": "hold"})))


def counts(server: EmulatorServer) -> tuple[int, int]:
    return server.counters[LIST], server.counters[RETRIEVE]


async def one_round(subs: list[Subscription]) -> list[Any]:
    """Every subscription's next status (or error), as one round reports them."""
    return await asyncio.wait_for(asyncio.gather(*(s.next() for s in subs), return_exceptions=True), 20)


async def open_subs(
    batch_ids: list[str], conn_id: str = "openai_default", interval: float = POLL
) -> list[Subscription]:
    return [await subscribe(conn_id, b, poll_interval=interval, max_retries=0) for b in batch_ids]


def close_all(subs: list[Subscription]) -> None:
    for sub in subs:
        sub.close()


async def events_of(triggers: list[OpenAIBatchTrigger], timeout: float = 20) -> list[list[dict[str, Any]]]:
    async def drain(trigger: OpenAIBatchTrigger) -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(asyncio.gather(*(drain(t) for t in triggers)), timeout)


# -- requests per round ------------------------------------------------------------------------------


async def test_recent_batches_are_learned_from_list_pages(held: EmulatorServer) -> None:
    ids = seed(held, 250)
    subs = await open_subs(ids)
    try:
        first = await one_round(subs)  # where the batches are is learned top down: 3 pages
        assert [b.id for b in first] == ids
        assert counts(held) == (3, 0)
        held.reset_counters()
        second = await one_round(subs)  # the same pages again, read in parallel
        assert [b.id for b in second] == ids
        assert all(b.status.value == "in_progress" for b in second)
        assert counts(held) == (3, 0)
    finally:
        close_all(subs)


async def test_a_thousand_recent_batches_take_at_most_fifteen_requests_a_round(held: EmulatorServer) -> None:
    ids = seed(held, 1000)
    held.seed_batches(30)  # created after ours: the newest page now starts with others' batches
    subs = await open_subs(ids)
    try:
        await one_round(subs)
        for _ in range(2):
            held.reset_counters()
            statuses = await one_round(subs)
            assert [b.id for b in statuses] == ids
            lists, retrieves = counts(held)
            assert lists + retrieves <= 15, (lists, retrieves)
    finally:
        close_all(subs)


async def test_a_single_batch_is_retrieved_as_before(held: EmulatorServer) -> None:
    (batch_id,) = seed(held, 1)
    subs = await open_subs([batch_id])
    try:
        for _ in range(3):
            (batch,) = await one_round(subs)
            assert batch.id == batch_id
        assert counts(held) == (0, 3)
    finally:
        close_all(subs)


async def test_old_batches_are_retrieved_and_not_listed_again(held: EmulatorServer) -> None:
    old = seed(held, 3)
    held.seed_batches(300)  # three pages of newer batches above ours
    subs = await open_subs(old)
    try:
        await one_round(subs)  # one page looked at, none found: asked for one by one
        assert counts(held) == (1, 3)
        held.reset_counters()
        statuses = await one_round(subs)
        assert [b.id for b in statuses] == old
        assert counts(held) == (0, 3)
    finally:
        close_all(subs)


async def test_a_batch_the_list_leaves_out_is_retrieved(held: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(held, 20)
    hidden = ids[5]
    original = held.store.list_batches

    def without_hidden(*, after: str | None, limit: int) -> Any:
        page = original(after=after, limit=limit)
        page["data"] = [b for b in page["data"] if b["id"] != hidden]
        return page

    monkeypatch.setattr(held.store, "list_batches", without_hidden)
    subs = await open_subs(ids)
    try:
        for _ in range(2):
            held.reset_counters()
            statuses = await one_round(subs)
            assert [b.id for b in statuses] == ids
            assert counts(held) == (1, 1)
    finally:
        close_all(subs)


# -- fallback and forcing ---------------------------------------------------------------------------


async def test_a_service_without_a_usable_list_falls_back_to_retrieve(held: EmulatorServer) -> None:
    ids = seed(held, 5)
    held.faults.add(LIST, "status", status=404, times=None)
    subs = await open_subs(ids)
    try:
        for _ in range(3):
            statuses = await one_round(subs)
            assert [b.id for b in statuses] == ids
        assert counts(held) == (1, 15)  # the list was tried once
    finally:
        close_all(subs)


async def test_a_transient_list_failure_reaches_the_round_and_the_next_round_lists_again(
    held: EmulatorServer,
) -> None:
    ids = seed(held, 4)
    held.faults.add(LIST, "status", status=503, times=1)
    subs = await open_subs(ids)
    try:
        failed = await one_round(subs)
        assert all(type(r).__name__ == "ServerError" for r in failed)
        statuses = await one_round(subs)
        assert [b.id for b in statuses] == ids
        assert counts(held) == (2, 0)
    finally:
        close_all(subs)


@pytest.mark.parametrize(
    ("mode", "single", "both"), [("auto", (0, 1), (1, 0)), ("retrieve", (0, 1), (0, 2)), ("list", (1, 0), (1, 0))]
)
async def test_the_connection_extra_forces_either_way(
    held: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    single: tuple[int, int],
    both: tuple[int, int],
) -> None:
    set_connection(monkeypatch, held.base_url, "forced", status_polling=mode)
    ids = seed(held, 2)
    subs = await open_subs(ids, conn_id="forced")
    twin = await open_subs(ids[:1], conn_id="forced")  # a second trigger waiting on the first batch
    try:
        assert [b.id for b in await one_round(subs[:1])] == ids[:1]
        assert counts(held) == single
        held.reset_counters()
        assert [b.id for b in await one_round(subs + twin)] == [*ids, ids[0]]
        assert counts(held) == both
    finally:
        close_all(subs + twin)


# -- isolation ---------------------------------------------------------------------------------------


async def test_two_connections_never_share_a_client(held: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, held.base_url, "wrong_key", api_key="sk-not-the-key")
    ids = seed(held, 4)
    good = [OpenAIBatchTrigger(conn_id="openai_default", batch_id=b, poll_interval=POLL) for b in ids]
    bad = [OpenAIBatchTrigger(conn_id="wrong_key", batch_id=b, poll_interval=POLL) for b in ids]
    task = asyncio.ensure_future(events_of(good + bad))
    await asyncio.sleep(3 * POLL)
    registry = _shared._registry()
    assert len(registry.clients) <= 2
    for batch_id in ids:
        held.store.cancel_batch(batch_id)

    results = await task

    assert [r[0]["status"] for r in results[:4]] == [EVENT_TERMINAL] * 4
    assert [r[0]["batch_id"] for r in results[:4]] == ids
    assert all(r[0]["batch"]["status"] == "cancelled" for r in results[:4])
    assert [r[0]["status"] for r in results[4:]] == [EVENT_ERROR] * 4
    assert all(r[0]["error_type"] == AuthenticationError.__name__ and not r[0]["retryable"] for r in results[4:])
    assert not registry.clients and not registry.pollers


async def test_a_cancelled_trigger_leaves_the_others_polling(held: EmulatorServer) -> None:
    ids = seed(held, 3)
    triggers = [OpenAIBatchTrigger(conn_id="openai_default", batch_id=b, poll_interval=POLL) for b in ids]
    tasks = [asyncio.ensure_future(events_of([t])) for t in triggers]
    await asyncio.sleep(3 * POLL)
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    registry = _shared._registry()
    assert len(registry.clients) == 1
    polled = held.counters[LIST]
    await asyncio.sleep(4 * POLL)
    assert held.counters[LIST] > polled  # the other two are still listed together
    for batch_id in ids[1:]:
        held.store.cancel_batch(batch_id)
    results = [await t for t in tasks[1:]]
    assert [r[0][0]["batch"]["status"] for r in results] == ["cancelled", "cancelled"]
    await asyncio.sleep(0)
    assert not registry.clients


async def test_a_batch_that_disappears_fails_only_its_own_trigger(held: EmulatorServer) -> None:
    ids = seed(held, 3)
    triggers = [OpenAIBatchTrigger(conn_id="openai_default", batch_id=b, poll_interval=POLL) for b in ids]
    task = asyncio.ensure_future(events_of(triggers))
    await asyncio.sleep(3 * POLL)
    with held.store.lock:
        del held.store._batches[ids[1]]
    await asyncio.sleep(3 * POLL)
    for batch_id in (ids[0], ids[2]):
        held.store.cancel_batch(batch_id)

    results = await task

    assert results[1][0]["status"] == EVENT_ERROR
    assert results[1][0]["error_type"] == NotFoundError.__name__
    assert [results[i][0]["batch"]["status"] for i in (0, 2)] == ["cancelled", "cancelled"]


async def test_triggers_after_the_last_one_ended_get_a_new_client(held: EmulatorServer) -> None:
    """As after a triggerer restart: the client closed with its last trigger; new triggers open another."""
    ids = seed(held, 2)
    registry = _shared._registry()
    for round_ in range(2):
        subs = await open_subs(ids)
        await one_round(subs)
        client = subs[0].poller.hook._async_client
        assert client is not None and not client.is_closed
        close_all(subs)
        await asyncio.gather(*registry.closing)
        assert client.is_closed, round_
        assert not registry.clients and not registry.pollers


# -- when rounds start (pure schedule: no clock) ---------------------------------------------------


@pytest.mark.parametrize(
    ("took", "expected"),
    [
        (0.0, 100.0 + 60.0),  # an instant round: one interval later
        (3.0, 100.0 + 60.0 - 3.0),  # early by its length: the next one ends one interval after this began
        (30.0, 100.0 + 60.0 - 60.0 * MAX_LEAD),  # the lead is capped
        (75.0, 100.0 + 75.0),  # overran the interval: at once
    ],
)
def test_a_round_starts_early_by_the_previous_round_length(took: float, expected: float) -> None:
    assert next_round_at(started=100.0, interval=60.0, now=100.0 + took) == pytest.approx(expected)


@pytest.mark.parametrize("interval", [0.05, 1.0, 60.0, 3600.0])
@pytest.mark.parametrize("share", [0.0, 0.1, 0.2, 0.25, 0.5, 0.99, 1.0, 2.0])
def test_rounds_are_never_later_than_an_interval_nor_more_frequent_than_the_cap(interval: float, share: float) -> None:
    started, now = 5.0, 5.0 + share * interval
    at = next_round_at(started=started, interval=interval, now=now)
    assert at >= now  # never in the past
    assert at - started <= max(interval, now - started) + 1e-9  # never later than an interval (unless overran)
    assert at - started >= interval * (1 - MAX_LEAD) - 1e-9  # never more than a third more rounds
    if share <= MAX_LEAD:  # the round that follows ends one interval after this one began, if it lasts as long
        assert at + (now - started) == pytest.approx(started + interval)
