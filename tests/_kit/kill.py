"""Binding a trigger to a task instance whose state and try number the Task SDK reports, for the on_kill tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest


def _has_try_lookup() -> bool:
    try:
        from airflow.sdk.execution_time.comms import GetPreviousTI  # noqa: F401
    except ImportError:
        return False
    return True


#: A test that needs the task's try number read through the Task SDK (``GetPreviousTI``: Airflow 3.2+).
needs_try_lookup = pytest.mark.skipif(not _has_try_lookup(), reason="Airflow 3.1 has no GetPreviousTI request")


class FakeComms:
    """Answers ``GetPreviousTI`` as the triggerer's supervisor would, from ``runs`` (newest first); records requests.

    :param runs: ``(run_id, logical_date, try_number)`` of the task's instances, newest logical date first.
    """

    def __init__(self, runs: list[tuple[str, Any, int]]) -> None:
        self.runs = runs
        self.sent: list[Any] = []

    def send(self, msg: Any) -> Any:
        from airflow.sdk.execution_time.comms import PreviousTIResult

        self.sent.append(msg)
        for run_id, logical_date, try_number in self.runs:
            if msg.logical_date is None or (logical_date is not None and logical_date < msg.logical_date):
                found = {"task_id": msg.task_id, "dag_id": msg.dag_id, "run_id": run_id, "try_number": try_number}
                return PreviousTIResult(task_instance={**found, "logical_date": logical_date})
        return PreviousTIResult(task_instance=None)


def task_now(
    trigger: Any,
    monkeypatch: pytest.MonkeyPatch,
    state: str | None,
    map_index: int = -1,
    *,
    try_number: int | None = 1,
    deferred_try: int = 1,
) -> list[dict[str, Any]]:
    """Bind ``trigger`` to a task instance deferred in try ``deferred_try`` whose state and try number, asked
    through the Task SDK, are ``state`` and ``try_number`` (``None``: the try-number request finds nothing)."""
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    trigger.task_instance = SimpleNamespace(  # type: ignore[assignment]
        dag_id="dag", task_id="task", run_id="run_1", map_index=map_index, try_number=deferred_try
    )
    key = "task" if map_index < 0 else f"task_{map_index}"
    asked: list[dict[str, Any]] = []

    def get_task_states(**query: Any) -> dict[str, dict[str, Any]]:
        asked.append(query)
        return {"run_1": {key: state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    runs = [] if try_number is None else [("run_1", None, try_number)]
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", FakeComms(runs), raising=False)
    return asked
