"""triggers/_kill.py: on_kill cancels for a user's kill, never for a resume of the same try.

``cancel_if_killed`` runs against a fake trigger whose task lookup and wake-up check are injected; ``read_task_now``
against a fake Task SDK channel, which records the exact requests.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_openai_batch.triggers import _kill
from airflow_provider_openai_batch.triggers._kill import TaskNow, cancel_if_killed, read_task_now

DEFERRED_TRY = 2
#: The states a task reaches in the same try by waiting on or resuming.
RESUMED = ("deferred", "scheduled", "queued", "running", "up_for_reschedule", "restarting", "up_for_retry")


class FakeTrigger:
    """A trigger deferred in ``try_number`` that records what its on_kill does."""

    def __init__(self, try_number: Any = DEFERRED_TRY, *, map_index: int = -1) -> None:
        self.task_instance = SimpleNamespace(
            dag_id="dag", task_id="task", run_id="run_2", map_index=map_index, try_number=try_number
        )
        self.log = logging.getLogger("test_kill")
        self.cancelled: list[str] = []
        self.fired_asks = 0

    async def cancel(self, why: str) -> None:
        self.cancelled.append(why)

    def fired(self, answer: bool | Exception) -> Any:
        async def may_have_fired() -> bool:
            self.fired_asks += 1
            if isinstance(answer, Exception):
                raise answer
            return answer

        return may_have_fired


def reading(now: TaskNow | Exception) -> Any:
    async def read(trigger: Any) -> TaskNow:
        if isinstance(now, Exception):
            raise now
        return now

    return read


async def on_kill(trigger: FakeTrigger, now: TaskNow | Exception, *, fired: bool | Exception | None = None) -> None:
    await cancel_if_killed(
        trigger,
        "the 2 shard batches of a job",
        trigger.cancel,
        may_have_fired=None if fired is None else trigger.fired(fired),
        read=reading(now),
    )


# -- cancel_if_killed ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "fired", "asks", "logged"),
    [
        *(
            (state, False, 0, f"its task is {state} (try 2; deferred in try 2): not cancelling")
            for state in [
                "deferred",
                "scheduled",
                "queued",
                "running",
                "up_for_reschedule",
                "restarting",
                "up_for_retry",
            ]
        ),
        # E.g. a shard failed: the other copy fired, the job failed on its own and left the other shards running.
        *(
            (state, True, 1, "; another copy of this trigger may have fired and woken it: not cancelling")
            for state in ["failed", "success"]
        ),
    ],
)
async def test_a_resume_of_the_same_try_or_an_end_after_a_wake_up_cancels_nothing_and_says_why(
    state: str, fired: bool, asks: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = FakeTrigger()
    with caplog.at_level(logging.WARNING, "test_kill"):
        await on_kill(trigger, TaskNow(state, DEFERRED_TRY), fired=fired)

    assert trigger.cancelled == []
    assert trigger.fired_asks == asks  # a resume is told by the state alone: no batch is read
    assert logged in caplog.text


@pytest.mark.parametrize(
    ("state", "try_number"),
    [
        *((state, DEFERRED_TRY + 1) for state in ["scheduled", "running", "deferred", "failed", "success"]),
        *((state, DEFERRED_TRY) for state in ["None", "skipped", "upstream_failed", "removed"]),
    ],
)
async def test_a_new_try_or_a_task_taken_off_its_try_cancels_whatever_the_wake_ups(state: str, try_number: int) -> None:
    # A clear the scheduler already re-queued (or re-deferred) reads as a new try; a cleared task as "None".
    trigger = FakeTrigger()
    await on_kill(trigger, TaskNow(state, try_number), fired=True)

    assert trigger.cancelled == [f"its task is {state} (try {try_number}; deferred in try 2)"]
    assert trigger.fired_asks == 0


@pytest.mark.parametrize("state", ["failed", "success"])
async def test_a_mark_cancels_when_the_trigger_had_no_reason_to_fire(state: str) -> None:
    # A user marks a task only while it waits here; the trigger's condition to fire did not hold then.
    trigger = FakeTrigger()
    await on_kill(trigger, TaskNow(state, DEFERRED_TRY), fired=False)

    assert trigger.cancelled == [f"its task is {state} (try 2; deferred in try 2)"]
    assert trigger.fired_asks == 1


async def test_an_end_whose_wake_up_cannot_be_read_cancels_nothing(caplog: pytest.LogCaptureFixture) -> None:
    trigger = FakeTrigger()
    with caplog.at_level(logging.WARNING, "test_kill"):
        await on_kill(trigger, TaskNow("failed", DEFERRED_TRY), fired=RuntimeError("503"))

    assert trigger.cancelled == []
    assert "; whether another copy woke it could not be read (RuntimeError: 503): not" in caplog.text


async def test_a_trigger_without_a_wake_up_check_cancels_on_an_end_in_the_same_try() -> None:
    # The single-batch trigger: its cancel skips a batch that ended, its one condition to fire.
    trigger = FakeTrigger()
    await on_kill(trigger, TaskNow("failed", DEFERRED_TRY))

    assert trigger.cancelled == ["its task is failed (try 2; deferred in try 2)"]


@pytest.mark.parametrize("state", ["scheduled", "queued", "running"])
@pytest.mark.parametrize(("fired", "cancelled"), [(True, False), (False, True), (None, True)])
async def test_without_a_try_number_a_re_queued_task_is_a_clear_unless_a_copy_may_have_woken_it(
    state: str, fired: bool | None, cancelled: bool
) -> None:
    # The try number cannot be read in a triggerer: a resume needs a copy of the trigger that fired; with none, a
    # clear re-queued the task. A trigger with no check (one batch) cancels, and skips a batch that ended.
    trigger = FakeTrigger()
    await on_kill(trigger, TaskNow(state), fired=fired)

    assert trigger.cancelled == ([f"its task is {state} (try number unknown; deferred in try 2)"] if cancelled else [])
    assert trigger.fired_asks == (fired is not None)


@pytest.mark.parametrize("deferred_try", [None, "2", True])
async def test_a_trigger_whose_own_try_is_unknown_judges_by_the_state(deferred_try: Any) -> None:
    # A try number now, 7, cannot be compared with it: no new try is seen, the state and the wake-up decide.
    trigger = FakeTrigger(deferred_try)
    await on_kill(trigger, TaskNow("running", 7), fired=True)
    assert trigger.cancelled == [] and trigger.fired_asks == 1

    await on_kill(trigger, TaskNow("None", 7))
    assert trigger.cancelled == ["its task is None (try 7; deferred in try None)"]


@pytest.mark.parametrize(
    ("now", "logged"),
    [
        (RuntimeError("API server unreachable"), "could not be read (RuntimeError: API server unreachable)"),
        (TaskNow(None, problem="the task instance was not found"), "could not be read (the task instance was not"),
        (TaskNow(None), "could not be read (no task instance)"),
    ],
)
async def test_an_unreadable_task_cancels_nothing(
    now: TaskNow | Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = FakeTrigger()
    with caplog.at_level(logging.WARNING, "test_kill"):
        await on_kill(trigger, now, fired=False)

    assert trigger.cancelled == []
    assert trigger.fired_asks == 0
    assert logged in caplog.text


async def test_the_check_and_the_cancel_outlive_a_cancelled_on_kill() -> None:
    # The triggerer's next round cancels an on_kill that is still reading the task: the work goes on, shielded.
    trigger = FakeTrigger()
    answer: asyncio.Future[TaskNow] = asyncio.get_running_loop().create_future()

    async def read(_: Any) -> TaskNow:
        return await answer

    outer = asyncio.ensure_future(cancel_if_killed(trigger, "batch b", trigger.cancel, read=read))
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    answer.set_result(TaskNow("failed", DEFERRED_TRY))
    for _ in range(10):
        await asyncio.sleep(0)

    assert trigger.cancelled == ["its task is failed (try 2; deferred in try 2)"]
    assert not _kill._SHIELDED


# -- read_task_now: the exact Task SDK request ---------------------------------------------------------------------


def sdk(monkeypatch: pytest.MonkeyPatch, states: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    asked: list[dict[str, Any]] = []

    def get_task_states(**query: Any) -> dict[str, dict[str, Any]]:
        asked.append(query)
        return states

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    return asked


@pytest.mark.parametrize(
    ("map_index", "key", "asked_index"), [(-1, "task", None), (4, "task_4", 4), (None, "task", None)]
)
async def test_reads_the_state_of_the_trigger_s_own_task_instance(
    monkeypatch: pytest.MonkeyPatch, map_index: int | None, key: str, asked_index: int | None
) -> None:
    asked = sdk(monkeypatch, {"run_2": {key: "running", "other": "failed"}, "run_1": {key: "failed"}})

    assert await read_task_now(FakeTrigger(map_index=map_index)) == TaskNow("running")  # type: ignore[arg-type]
    assert asked == [{"dag_id": "dag", "task_ids": ["task"], "run_ids": ["run_2"], "map_index": asked_index}]


async def test_a_cleared_task_instance_reads_none(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk(monkeypatch, {"run_2": {"task": None}})
    assert await read_task_now(FakeTrigger()) == TaskNow("None")


async def test_a_task_instance_not_found_or_absent_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk(monkeypatch, {"run_2": {"other_task": "failed"}})

    assert await read_task_now(FakeTrigger()) == TaskNow(None, problem="the task instance was not found")
    no_ti = SimpleNamespace(task_instance=None)
    assert await read_task_now(no_ti) == TaskNow(None, problem="the trigger runs without a task instance")


async def test_a_failing_read_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def broken(**_: Any) -> Any:
        raise RuntimeError("API server unreachable")

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(broken))
    with pytest.raises(RuntimeError, match="unreachable"):
        await read_task_now(FakeTrigger())
