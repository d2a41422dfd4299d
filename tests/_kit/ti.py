"""The one fake task instance of the tests, and an ``execute`` context holding it."""

from __future__ import annotations

import json
from typing import Any


class FakeTI:
    """Just enough of a task instance: identity attributes and a recording ``xcom_push``."""

    def __init__(
        self,
        dag_id: str = "dag",
        task_id: str = "task",
        run_id: str = "run_1",
        map_index: int = -1,
        try_number: int = 1,
    ) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        self.pushes: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must be JSON-able
        self.pushes.append((key, value))

    @property
    def xcoms(self) -> dict[str, Any]:
        """The last value pushed under each key."""
        return dict(self.pushes)


def context(ti: FakeTI | None = None) -> dict[str, Any]:
    """An ``execute`` context: just ``ti`` (a fresh :class:`FakeTI` unless given)."""
    return {"ti": ti if ti is not None else FakeTI()}
