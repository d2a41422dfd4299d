"""OpenAIBatchJobOperator in a real Airflow 3: a three-shard job defers once, survives a triggerer restart,
reuses every shard batch when cleared, and a kill of the deferred task cancels every shard batch."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests._kit.e2e_runs import states_of, trigger_log_files, trigger_start_times
from tests._kit.e2e_stack import AirflowStack
from tests._kit.job_lines import ids_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

JOB = "openai_batch_large_job"
TASK = "run_job"
#: Batches last ~15 s (see SLOW in test_example_dags_e2e): long enough to act while the job waits.
SLOW = {"batch_metadata": {"emulator": "slow"}}


def job_batches(airflow: AirflowStack, run_id: str) -> list[str]:
    return list(airflow.xcom(JOB, run_id, TASK, key="batch_ids"))


def wait_for_job_trigger(airflow: AirflowStack, run_id: str, timeout: float = 90.0) -> str:
    """Wait until a triggerer runs the job's trigger and it has logged the job's progress once."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = "".join(p.read_text(errors="replace") for p in trigger_log_files(airflow, JOB, run_id, TASK))
        if trigger_start_times(text) and "Job: " in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the job's trigger never ran: {text[-2000:]}\n{airflow.diagnostics()}")


def statuses(airflow: AirflowStack, batch_ids: list[str]) -> list[str]:
    return [airflow.emulator_get(f"/batches/{batch_id}")["status"] for batch_id in batch_ids]


def test_job_defers_once_survives_a_triggerer_restart_and_merges_in_order(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(JOB, SLOW)
    airflow.wait_for_ti_state(JOB, run_id, TASK, {"deferred"}, timeout=150)
    batch_ids = job_batches(airflow, run_id)
    assert len(batch_ids) == 3
    wait_for_job_trigger(airflow, run_id)
    assert all(status in {"validating", "in_progress", "finalizing"} for status in statuses(airflow, batch_ids))
    restarted = airflow.restart_component("triggerer")

    state = airflow.wait_for_run(JOB, run_id, timeout=240)
    assert state == "success", f"{states_of(airflow, JOB, run_id)}\n{airflow.diagnostics()}"
    assert statuses(airflow, batch_ids) == ["completed"] * 3  # a restart is not a kill
    assert restarted.alive()
    report = airflow.xcom(JOB, run_id, "check_order")
    assert report["batches"] == batch_ids and report["answered"] == 2500 and report["in_input_order"]
    assert report["lines"] == [[1, 1000], [1001, 2000], [2001, 2500]]
    manifest = airflow.xcom(JOB, run_id, TASK)
    assert ids_of(manifest["output"]["path"]) == [f"t{i:06d}" for i in range(2500)]
    assert manifest["verdict"] == "succeed" and manifest["totals"]["batches"] == 3
    log = airflow.task_log(JOB, run_id, TASK, try_number=1)
    assert log.count("Job: 3 shard batch(es), 3 created, 0 reused") == 1  # deferred once, resumed once


def test_clearing_the_job_reuses_every_shard_batch(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(JOB, SLOW)
    assert airflow.wait_for_run(JOB, run_id, timeout=240, interval=1.0) == "success"
    batch_ids = job_batches(airflow, run_id)
    batches_before, files_before = len(airflow.emulator_batches()), len(airflow.emulator_files())

    airflow.api(
        "POST",
        f"/api/v2/dags/{JOB}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [TASK],
            "only_failed": False,
            "include_downstream": True,
            "reset_dag_runs": True,
        },
    )
    deadline = time.monotonic() + 150
    ti: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ti = airflow.task_instance(JOB, run_id, TASK)
        if ti["try_number"] >= 2 and ti["state"] == "success":
            break
        time.sleep(0.5)
    assert ti["try_number"] >= 2 and ti["state"] == "success", f"{ti}\n{airflow.diagnostics()}"
    assert airflow.wait_for_run(JOB, run_id, timeout=90) == "success"

    assert job_batches(airflow, run_id) == batch_ids
    assert len(airflow.emulator_batches()) == batches_before, "the clear created another batch"
    new_files = len(airflow.emulator_files()) - files_before
    assert new_files == 0, "the clear uploaded a shard again"
    manifest = airflow.xcom(JOB, run_id, TASK)
    assert [shard["reused"] for shard in manifest["shards"]] == [True, True, True]
    assert "3 created" not in airflow.task_log(JOB, run_id, TASK, try_number=ti["try_number"])


def test_marking_the_deferred_job_failed_cancels_every_shard(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(JOB, {"batch_metadata": {"emulator": "hold"}})
    airflow.wait_for_ti_state(JOB, run_id, TASK, {"deferred"}, timeout=150)
    batch_ids = job_batches(airflow, run_id)
    wait_for_job_trigger(airflow, run_id)
    assert set(statuses(airflow, batch_ids)) <= {"validating", "in_progress"}

    airflow.api("PATCH", f"/api/v2/dags/{JOB}/dagRuns/{run_id}/taskInstances/{TASK}", json={"new_state": "failed"})

    deadline = time.monotonic() + 120  # on_kill reads the task state first (~20 s on SQLite)
    while time.monotonic() < deadline and statuses(airflow, batch_ids) != ["cancelled"] * 3:
        time.sleep(0.3)
    assert statuses(airflow, batch_ids) == ["cancelled"] * 3, airflow.diagnostics()
    assert airflow.wait_for_run(JOB, run_id, timeout=60) == "failed"
