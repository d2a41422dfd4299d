"""Two triggerers in a real Airflow: a trigger that moves from one to the other is not a kill.

Airflow 3.3 cancels a trigger that its triggerer lost to another one (missed heartbeats) through the same path
as a user's kill, so the trigger's ``on_kill`` runs although its task still waits. Cancel on kill must then
leave the batch alone: the other triggerer is waiting on it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

import pytest

from tests._kit.e2e_runs import trigger_log_files, wait_for_trigger_running
from tests._kit.e2e_stack import AirflowStack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

WAIT_IN_CREATE = "openai_batch_wait_in_create"
TASK = "create_and_wait"
#: Seconds without a heartbeat after which a triggerer's triggers go to another one (set in the stack's env).
HEALTH_THRESHOLD = 10


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    # Phases of 1.5 s, 20x with the "slow" flag: the batch runs ~90 s, long enough for a handover mid-wait.
    stack = AirflowStack(home=tmp_path_factory.mktemp("airflow-home-handover"), phase_seconds=1.5, poll_interval=1.0)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def triggerer_of(airflow: AirflowStack, trigger_id: int) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{airflow.db_path}?mode=ro", uri=True, timeout=10)) as db:
        row = db.execute("SELECT triggerer_id FROM trigger WHERE id = ?", (trigger_id,)).fetchone()
    return None if row is None else row[0]


def the_trigger(airflow: AirflowStack, timeout: float = 60.0) -> tuple[int, int]:
    """``(trigger id, triggerer job id)`` of the one trigger, once a triggerer holds it."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[int, str, str, int | None]] = []
    while time.monotonic() < deadline:
        rows = [row for row in airflow.trigger_assignments() if row[3] is not None]
        if len(rows) == 1:
            return rows[0][0], int(rows[0][3])  # type: ignore[arg-type]
        time.sleep(0.2)
    raise AssertionError(f"no single assigned trigger: {rows}")


def test_a_trigger_moving_to_another_triggerer_does_not_cancel_the_batch(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(WAIT_IN_CREATE, {"batch_metadata": {"emulator": "slow"}})
    airflow.wait_for_ti_state(WAIT_IN_CREATE, run_id, TASK, {"deferred"}, timeout=120)
    batch_id = airflow.xcom(WAIT_IN_CREATE, run_id, TASK, key="batch_id")
    wait_for_trigger_running(airflow, WAIT_IN_CREATE, run_id, TASK, batch_id)
    trigger_id, first = the_trigger(airflow)

    # A second triggerer joins; the first one hangs (no heartbeat) until the second one takes the trigger over.
    airflow.start_component(
        "triggerer", key="triggerer-b", env={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    )
    airflow.freeze_component("triggerer")
    try:
        deadline = time.monotonic() + HEALTH_THRESHOLD + 60
        while triggerer_of(airflow, trigger_id) in (first, None):
            assert time.monotonic() < deadline, f"the trigger never moved\n{airflow.diagnostics()}"
            time.sleep(0.5)
    finally:
        airflow.thaw_component("triggerer")
    assert airflow.emulator_get(f"/batches/{batch_id}")["status"] in {"validating", "in_progress", "finalizing"}

    # Thawed, the first triggerer finds the trigger gone from its set and cancels its copy: Airflow 3.3 calls
    # on_kill there (on a loaded machine the trigger may bounce back and the other copy is stopped instead).
    # The task still waits, so nothing is cancelled, and the run succeeds.
    def logs() -> str:
        files = [*trigger_log_files(airflow, WAIT_IN_CREATE, run_id, TASK)]
        files += [proc.log_path for key, proc in airflow.procs.items() if key.startswith("triggerer")]
        return "".join(path.read_text(errors="replace") for path in files)

    deadline = time.monotonic() + 90
    while "invoking on_kill" not in logs():
        assert time.monotonic() < deadline, f"no triggerer dropped its copy of the trigger\n{airflow.diagnostics()}"
        time.sleep(0.5)
    assert airflow.wait_for_run(WAIT_IN_CREATE, run_id, timeout=240, interval=1.0) == "success", airflow.diagnostics()
    batch = airflow.emulator_get(f"/batches/{batch_id}")
    assert batch["status"] == "completed" and batch.get("cancelling_at") is None
    assert "cancel requested for batch" not in logs()
