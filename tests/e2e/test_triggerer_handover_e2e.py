"""Two triggerers in a real Airflow: a trigger that moves from one to the other is not a kill.

Airflow 3.3 cancels a trigger that its triggerer lost to another one (missed heartbeats) through the same path
as a user's kill, so the trigger's ``on_kill`` runs although its task still waits. Cancel on kill must then
leave the batch alone: the other triggerer is waiting on it. Nor is it a kill when the other triggerer's copy
fired meanwhile and the task resumed in the same try: a job's other shards must keep running.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._kit.e2e_runs import trigger_log_files, wait_for_trigger_running
from tests._kit.e2e_stack import AirflowStack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

WAIT_IN_CREATE = "openai_batch_wait_in_create"
#: A job in shards of 10 with the default cancel_on_kill=True (its deadline, a day away here, plays no part).
JOB = "openai_batch_job_deadline"
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


def trigger_logs(airflow: AirflowStack, dag_id: str, run_id: str, task_id: str) -> str:
    """The task's trigger logs and every triggerer's own log, as one text."""
    files = [*trigger_log_files(airflow, dag_id, run_id, task_id)]
    files += [proc.log_path for key, proc in airflow.procs.items() if key.startswith("triggerer")]
    return "".join(path.read_text(errors="replace") for path in files)


@contextlib.contextmanager
def first_triggerer_hung(airflow: AirflowStack) -> Iterator[None]:
    """A second triggerer joins; the first one hangs (no heartbeat) inside the block, and thaws after it."""
    airflow.start_component(
        "triggerer", key="triggerer-b", env={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    )
    airflow.freeze_component("triggerer")
    try:
        yield
    finally:
        airflow.thaw_component("triggerer")


def wait_until(airflow: AirflowStack, condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s in vain\n{airflow.diagnostics()}"
        time.sleep(interval)


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
    with first_triggerer_hung(airflow):
        wait_until(airflow, lambda: triggerer_of(airflow, trigger_id) not in (first, None), HEALTH_THRESHOLD + 60)
    assert airflow.emulator_get(f"/batches/{batch_id}")["status"] in {"validating", "in_progress", "finalizing"}

    # Thawed, the first triggerer finds the trigger gone from its set and cancels its copy: Airflow 3.3 calls
    # on_kill there (on a loaded machine the trigger may bounce back and the other copy is stopped instead).
    # The task still waits, so nothing is cancelled, and the run succeeds.
    def logs() -> str:
        return trigger_logs(airflow, WAIT_IN_CREATE, run_id, TASK)

    deadline = time.monotonic() + 90
    while "invoking on_kill" not in logs():
        assert time.monotonic() < deadline, f"no triggerer dropped its copy of the trigger\n{airflow.diagnostics()}"
        time.sleep(0.5)
    assert airflow.wait_for_run(WAIT_IN_CREATE, run_id, timeout=240, interval=1.0) == "success", airflow.diagnostics()
    batch = airflow.emulator_get(f"/batches/{batch_id}")
    assert batch["status"] == "completed" and batch.get("cancelling_at") is None
    assert "cancel requested for batch" not in logs()


# -- a job task that resumed from the other triggerer's copy -----------------------------------------------------------

#: The emulator runs at most 30 requests at once: of the job's four shards of 10, one fails validation with
#: request_limit_exceeded; the job's trigger fires on it at once, and the task resumes while the others run.
REQUEST_LIMIT = 30


@pytest.fixture(scope="module")
def job_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    # 1.5 s phases, 20x with "slow": every shard validates after ~30 s and runs ~60 s more. --verbose: the
    # emulator logs every request it answers, the record this test reads for cancels.
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-home-handover-job"),
        phase_seconds=1.5,
        poll_interval=1.0,
        dags_folder=Path(__file__).parent / "dags",
        expected_dag_ids=(JOB,),
        emulator_args=("--enqueued-request-limit", str(REQUEST_LIMIT), "--verbose"),
    )
    with stack.running():
        yield stack


def test_a_stale_copy_of_a_job_trigger_leaves_the_shards_of_a_task_that_resumed_running(
    job_airflow: AirflowStack,
) -> None:
    airflow, task = job_airflow, "run_job"
    run_id = airflow.trigger(JOB, {"requests": 40, "deadline_seconds": 86400, "batch_metadata": {"emulator": "slow"}})
    airflow.wait_for_ti_state(JOB, run_id, task, {"deferred"}, timeout=180)

    def logs() -> str:
        return trigger_logs(airflow, JOB, run_id, task)

    wait_until(airflow, lambda: "Job: 0/4 shard batches finished" in logs(), 60, 0.2)  # the first copy polled
    trigger_id, _ = the_trigger(airflow)

    # The first triggerer hangs, its copy still waiting on every shard. The second takes the trigger over and
    # fires when the fourth shard fails for capacity (~30 s in): the task resumes in try 1, and the trigger's row
    # is deleted (only a copy that fired lets that happen, and the first is frozen).
    with first_triggerer_hung(airflow):
        wait_until(airflow, lambda: triggerer_of(airflow, trigger_id) is None, HEALTH_THRESHOLD + 150)
        # Hold the emulator while the first triggerer thaws: its stale copy's overdue poll (which would see the
        # failed shard and fire) waits there until Airflow cancels the copy, as a copy asleep in its poll
        # interval would be; the resumed task waits there too, running.
        airflow.freeze_emulator()

    # Thawed, the first triggerer finds the trigger gone from its set and runs on_kill on its stale copy, which
    # still holds every shard as running. The task resumed in the same try: nothing may be cancelled.
    try:
        wait_until(airflow, lambda: "invoking on_kill" in logs(), 60, 0.2)
    finally:
        airflow.thaw_emulator()
    wait_until(airflow, lambda: re.search(r"not cancelling|cancel requested", logs()) is not None, 120)
    decisions = [line for line in logs().splitlines() if "not cancelling" in line or "cancel requested" in line]
    assert [line for line in airflow.emulator_log() if "/cancel" in line] == [], decisions
    shards = [b for b in airflow.emulator_batches() if b["metadata"].get("emulator") == "slow"]
    running = [b for b in shards if b["status"] != "failed"]
    # Four shards, one failed for capacity; the resumed job puts that one back after a back-off (another batch,
    # which may fail for capacity again while the three run): never a cancel either way.
    failed = [b for b in shards if b["status"] == "failed"]
    assert failed and all(b["errors"]["data"][0]["code"] == "request_limit_exceeded" for b in failed), failed
    assert len(running) in (3, 4), shards
    assert all(b["status"] in {"validating", "in_progress", "finalizing", "completed"} for b in running), running
    assert all(b.get("cancelling_at") is None for b in shards)
    assert airflow.task_instance(JOB, run_id, task)["try_number"] == 1  # a resume of the same try
    # The stale copy's own word (in its trigger log and the triggerer's): not a kill.
    assert decisions and all("not cancelling" in line and "deferred in try 1)" in line for line in decisions)
