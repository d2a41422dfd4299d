"""Which task instance a batch belongs to, and whether (and how far back) an earlier try may have made one.

A batch is tagged with a key derived from the task instance (never the try number), so that a retry or a
cleared task finds the batch an earlier try created instead of billing a second one. Looking costs list calls,
so it is skipped when this task instance surely never ran before, and bounded by time when it may have.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["LookBack", "epoch_seconds", "look_back", "task_instance_key"]


def task_instance_key(context: Any, *parts: str) -> str:
    """A run-stable key for this task instance (never the try number), plus what identifies its input."""
    ti = context["ti"]
    raw = "\x1f".join([ti.dag_id, ti.task_id, ti.run_id, str(getattr(ti, "map_index", -1)), *parts])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class LookBack:
    """Whether to look for a batch made by an earlier try of this task instance, and back to when.

    :param needed: ``False`` only when this is surely the task instance's first run.
    :param not_before: epoch seconds before which no try of it can have created a batch (``0.0``: unknown,
        look through everything).
    """

    needed: bool
    not_before: float

    def __str__(self) -> str:
        if not self.not_before:
            return "the beginning"
        return datetime.fromtimestamp(self.not_before, tz=timezone.utc).isoformat(timespec="seconds")


def look_back(context: Any) -> LookBack:
    """What this task instance's context says about earlier tries.

    Airflow 3 (3.1 to 3.3) gives a task instance a new try number whenever the scheduler schedules it again:
    a retry, a clear (task or whole run), an orphaned task reset by the scheduler, a task whose worker died
    and was failed by the heartbeat check. The try number stays only for a sensor's reschedule, a resumed
    deferral (which runs ``execute_complete``, never ``execute``) and a task requeued from ``queued``
    (which never started). So try number 1 means no earlier run of ``execute``; anything else, or no try
    number at all, means look.

    An earlier try cannot have started before its DAG run could run: the earliest of the run's
    ``run_after``, ``queued_at`` and ``start_date`` bounds the look-up (``run_after`` does not move when a
    run is cleared; the others may, hence the minimum).
    """
    try_number = getattr(context.get("ti"), "try_number", None)
    first_try = isinstance(try_number, int) and not isinstance(try_number, bool) and try_number == 1
    dag_run = context.get("dag_run")
    moments = [epoch_seconds(getattr(dag_run, name, None)) for name in ("run_after", "queued_at", "start_date")]
    known = [moment for moment in moments if moment is not None]
    return LookBack(needed=not first_try, not_before=min(known) if known else 0.0)


def epoch_seconds(value: object) -> float | None:
    """A ``datetime`` from the task context as epoch seconds (naive ones are UTC, as Airflow stores them)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # Airflow stores UTC
    return value.timestamp()
