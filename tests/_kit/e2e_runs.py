"""What the e2e tests read back from a run in the real Airflow: task states and the triggers' logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests._kit.e2e_stack import AirflowStack


def states_of(airflow: AirflowStack, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
    return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in airflow.task_instances(dag_id, run_id)}


def trigger_log_files(airflow: AirflowStack, dag_id: str, run_id: str, task_id: str) -> list[Path]:
    folder = airflow.logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return sorted(folder.glob("attempt=*.log.trigger.*.log"))


def trigger_starts(trigger_log: str) -> int:
    """How many times a triggerer started the trigger (one ``... (ID n) starting`` line each)."""
    return sum(1 for line in trigger_log.splitlines() if ") starting" in line and '"trigger ' in line)


def trigger_start_times(trigger_log: str) -> list[str]:
    """ISO timestamps (UTC) of the ``trigger ... starting`` lines."""
    return [
        json.loads(line)["timestamp"].replace("Z", "+00:00")
        for line in trigger_log.splitlines()
        if ") starting" in line and '"trigger ' in line
    ]


def wait_for_trigger_running(
    airflow: AirflowStack, dag_id: str, run_id: str, task_id: str, batch_id: str, timeout: float = 60.0
) -> None:
    """Wait until a triggerer has started the task's trigger and it has polled the batch once.

    Deferred is not enough: a trigger is picked up by the triggerer a moment later, and an action on the
    task before that finds no running trigger to call ``on_kill`` on (or to hand over on a restart).
    """
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = "".join(p.read_text(errors="replace") for p in trigger_log_files(airflow, dag_id, run_id, task_id))
        if trigger_start_times(text) and f"Batch {batch_id}:" in text:
            return
        time.sleep(0.2)
    raise AssertionError(f"the trigger of {task_id} never ran: {text[-2000:]}\n{airflow.diagnostics()}")
