"""Binding a trigger to a task instance whose state the Task SDK reports, for the on_kill tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest


def task_now(
    trigger: Any, monkeypatch: pytest.MonkeyPatch, state: str | None, map_index: int = -1, *, deferred_try: int = 1
) -> list[dict[str, Any]]:
    """Bind ``trigger`` to a task instance deferred in try ``deferred_try`` whose state, asked through the Task
    SDK, is ``state`` (its try number now cannot be asked: none is read)."""
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
    return asked
