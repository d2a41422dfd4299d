"""The example DAGs in a real Airflow 3: scheduler, LocalExecutor, triggerer, dag-processor, REST API.

One Airflow (started once for the module by the ``airflow`` fixture) runs against the emulator in a
subprocess. The tests run in file order and the last one searches everything the others left behind
for the API key.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any

import pytest

from tests._kit.e2e_runs import (
    states_of,
    trigger_log_files,
    trigger_start_times,
    trigger_starts,
    wait_for_trigger_running,
)
from tests._kit.e2e_stack import AirflowStack
from tests._kit.job_lines import ids_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

CHAT = "openai_batch_chat"
#: DAG run conf making the emulator's batches last ~15 s (phases 20x the stack's 0.25 s). Every run whose
#: task defers uses it: on a loaded 2-core machine a trigger firing within a few seconds of the deferral
#: hits apache/airflow#72716 (the scheduler drains the deferring worker's stale "success" after the
#: resumed try is already running and fails it), which is an Airflow race, not what these tests are about.
SLOW = {"batch_metadata": {"emulator": "slow"}}
WAIT_IN_CREATE = "openai_batch_wait_in_create"

#: Decrypted trigger-table kwargs seen while tasks were deferred (checked for secrets at the end).
TRIGGER_SNAPSHOTS: list[tuple[int, str, str]] = []


def snapshot_triggers(airflow: AirflowStack) -> None:
    for row in airflow.trigger_rows():
        if row not in TRIGGER_SNAPSHOTS:
            TRIGGER_SNAPSHOTS.append(row)


class StateWatcher:
    """Records every state each task instance was seen in while a run is polled."""

    def __init__(self, airflow: AirflowStack) -> None:
        self.airflow = airflow
        self.seen: dict[str, set[str]] = defaultdict(set)

    def __call__(self, tis: list[dict[str, Any]]) -> None:
        for ti in tis:
            self.seen[ti["task_id"]].add(str(ti["state"]))
        if any(ti["state"] == "deferred" for ti in tis):
            snapshot_triggers(self.airflow)


def wait_for_batch_status(airflow: AirflowStack, batch_id: str, wanted: set[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = airflow.emulator_get(f"/batches/{batch_id}")["status"]
        if status in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} is {status!r}, never one of {wanted}\n{airflow.diagnostics()}")


# ---------------------------------------------------------------------------------------------------


def test_chat_example_end_to_end_through_the_triggerer(airflow: AirflowStack) -> None:
    # SLOW keeps the batch running ~15 s, so the sensor's first check finds it unfinished and defers.
    run_id = airflow.trigger(CHAT, SLOW)
    watcher = StateWatcher(airflow)
    state = airflow.wait_for_run(CHAT, run_id, timeout=150, on_poll=watcher)

    states = states_of(airflow, CHAT, run_id)
    assert state == "success", f"{states}\n{airflow.diagnostics()}"
    assert set(states.values()) == {"success"}
    assert len(states) == 5

    # The sensor went through the triggerer: seen deferred, its trigger ran and logged the batch.
    assert "deferred" in watcher.seen["wait_for_batch"], dict(watcher.seen)
    batch_id = airflow.xcom(CHAT, run_id, "create_batch")
    assert airflow.xcom(CHAT, run_id, "create_batch", key="batch_id") == batch_id
    trigger_logs = trigger_log_files(airflow, CHAT, run_id, "wait_for_batch")
    assert trigger_logs, "no trigger log file for the sensor"
    trigger_log = "".join(p.read_text(errors="replace") for p in trigger_logs)
    assert trigger_starts(trigger_log) == 1
    assert f"Batch {batch_id}: in_progress" in trigger_log
    assert "Trigger fired event" in trigger_log
    assert any("OpenAIBatchTrigger" in row[1] for row in TRIGGER_SNAPSHOTS)
    sensor_log = airflow.task_log(CHAT, run_id, "wait_for_batch")
    assert "deferr" in sensor_log.lower() or "trigger" in sensor_log.lower(), sensor_log[-2000:]

    # The sensor's return value is the batch's output file.
    batch = airflow.emulator_get(f"/batches/{batch_id}")
    assert batch["status"] == "completed"
    assert batch["metadata"]["emulator"] == "slow"
    assert airflow.xcom(CHAT, run_id, "wait_for_batch") == batch["output_file_id"]
    assert airflow.xcom(CHAT, run_id, "wait_for_batch", key="batch")["status"] == "completed"

    # Cost in a real Airflow: the pre-flight bound from create, the bill from the sensor, and the bound holds.
    estimate = airflow.xcom(CHAT, run_id, "create_batch", key="estimate")
    cost = airflow.xcom(CHAT, run_id, "wait_for_batch", key="cost")
    assert cost["input_tokens"] == batch["usage"]["input_tokens"] > 0
    assert cost["prices_as_of"] and 0 < cost["cost_usd"] <= estimate["cost_usd"]
    assert "Batch usage (model " in airflow.task_log(CHAT, run_id, "wait_for_batch")

    # One result per request, matched by custom_id.
    input_ids = ids_of(airflow.xcom(CHAT, run_id, "write_input", key="input_file"))
    summary = airflow.xcom(CHAT, run_id, "summarize")
    output_ids = ids_of(summary["output_path"])
    assert Counter(output_ids) == Counter(input_ids)
    assert len(input_ids) == 5
    assert summary["results"] == summary["succeeded"] == 5
    assert summary["missing"] == []
    assert summary["batch_id"] == batch_id
    assert summary["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert all(text.startswith("echo:") for text in summary["answers"].values())


def test_every_other_example_succeeds(airflow: AirflowStack) -> None:
    # Batches last ~15 s ("slow"): see SLOW for why no example here waits on a batch that finishes at once.
    confs = {
        WAIT_IN_CREATE: SLOW,
        "openai_batch_mapped": SLOW,
        "openai_batch_cancel": {"batch_metadata": {"emulator": "hold,slow"}},
        "openai_batch_embeddings": SLOW,
    }
    runs = {dag_id: airflow.trigger(dag_id, conf) for dag_id, conf in confs.items()}
    for dag_id, run_id in runs.items():
        state = airflow.wait_for_run(dag_id, run_id, timeout=150, on_poll=StateWatcher(airflow))
        assert state == "success", (
            f"{dag_id}: {states_of(airflow, dag_id, run_id)}\n{airflow.failed_task_logs(dag_id, run_id)}\n"
            f"{airflow.diagnostics()}"
        )

    answers = airflow.xcom(WAIT_IN_CREATE, runs[WAIT_IN_CREATE], "answers")
    assert sorted(answers) == ["q0", "q1", "q2"]

    mapped = airflow.xcom("openai_batch_mapped", runs["openai_batch_mapped"], "gather")
    assert mapped == {"batches": 3, "results": 9, "succeeded": 9}
    mapped_batches = {
        airflow.xcom("openai_batch_mapped", runs["openai_batch_mapped"], "create_batch", map_index=i) for i in range(3)
    }
    assert len(mapped_batches) == 3, "one batch per mapped input file"

    report = airflow.xcom("openai_batch_cancel", runs["openai_batch_cancel"], "report")
    assert report["status"] == "cancelled"
    assert airflow.emulator_get(f"/batches/{report['batch_id']}")["status"] == "cancelled"

    vectors = airflow.xcom("openai_batch_embeddings", runs["openai_batch_embeddings"], "vectors")
    assert len(vectors) == 4
    assert all(v is not None and v["dims"] > 0 for v in vectors.values())


def test_marking_a_deferred_task_failed_cancels_its_batch(airflow: AirflowStack) -> None:
    """Airflow 3.3 calls the trigger's on_kill when a user acts on a deferred task."""
    run_id = airflow.trigger(WAIT_IN_CREATE, {"batch_metadata": {"emulator": "hold"}})
    airflow.wait_for_ti_state(WAIT_IN_CREATE, run_id, "create_and_wait", {"deferred"})
    snapshot_triggers(airflow)
    batch_id = airflow.xcom(WAIT_IN_CREATE, run_id, "create_and_wait", key="batch_id")
    wait_for_trigger_running(airflow, WAIT_IN_CREATE, run_id, "create_and_wait", batch_id)
    assert airflow.emulator_get(f"/batches/{batch_id}")["status"] in {"validating", "in_progress"}

    airflow.api(
        "PATCH",
        f"/api/v2/dags/{WAIT_IN_CREATE}/dagRuns/{run_id}/taskInstances/create_and_wait",
        json={"new_state": "failed"},
    )

    # on_kill first reads the task's state through the triggerer, which takes up to ~25 s on SQLite.
    cancelling = wait_for_batch_status(airflow, batch_id, {"cancelling", "cancelled"}, timeout=90)
    assert cancelling in {"cancelling", "cancelled"}
    assert wait_for_batch_status(airflow, batch_id, {"cancelled"}) == "cancelled"
    assert airflow.wait_for_run(WAIT_IN_CREATE, run_id, timeout=60) == "failed"
    assert airflow.task_instance(WAIT_IN_CREATE, run_id, "create_and_wait")["state"] == "failed"
    logs = "".join(
        p.read_text(errors="replace") for p in trigger_log_files(airflow, WAIT_IN_CREATE, run_id, "create_and_wait")
    )
    logs += airflow.procs["triggerer"].log_path.read_text(errors="replace")
    assert "on_kill" in logs or "cancel requested" in logs.lower(), logs[-3000:]


def test_triggerer_restart_mid_wait_still_completes(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(CHAT, SLOW)
    airflow.wait_for_ti_state(CHAT, run_id, "wait_for_batch", {"deferred"}, timeout=90)
    snapshot_triggers(airflow)
    batch_id = airflow.xcom(CHAT, run_id, "create_batch")
    # The running triggerer has picked the trigger up and polled before it is stopped.
    wait_for_trigger_running(airflow, CHAT, run_id, "wait_for_batch", batch_id)
    assert any(row[3] is not None for row in airflow.trigger_assignments())
    before = airflow.emulator_get(f"/batches/{batch_id}")["status"]
    assert before in {"validating", "in_progress", "finalizing"}, "the restart must happen mid-wait"
    restarted_at = datetime.now(timezone.utc).isoformat()
    old_log = airflow.procs["triggerer"].log_path
    new = airflow.restart_component("triggerer")
    assert new.log_path != old_log

    state = airflow.wait_for_run(CHAT, run_id, timeout=150, on_poll=StateWatcher(airflow))
    assert state == "success", f"{states_of(airflow, CHAT, run_id)}\n{airflow.diagnostics()}"
    # A restart is not a kill: the batch was not cancelled, it completed and was waited for to the end.
    batch = airflow.emulator_get(f"/batches/{batch_id}")
    assert batch["status"] == "completed"
    assert airflow.xcom(CHAT, run_id, "wait_for_batch") == batch["output_file_id"]
    # The new triggerer started the same trigger again (it rewrites the trigger's log file).
    trigger_log = "".join(
        p.read_text(errors="replace") for p in trigger_log_files(airflow, CHAT, run_id, "wait_for_batch")
    )
    starts = trigger_start_times(trigger_log)
    assert starts and max(starts) > restarted_at, (restarted_at, trigger_log[-3000:])
    assert "Trigger fired event" in trigger_log


def test_clearing_create_after_success_reuses_the_batch(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(CHAT, SLOW)
    assert airflow.wait_for_run(CHAT, run_id, timeout=120, interval=1.0) == "success"
    batch_id = airflow.xcom(CHAT, run_id, "create_batch")
    batches_before = len(airflow.emulator_batches())
    files_before = len(airflow.emulator_files())

    airflow.api(
        "POST",
        f"/api/v2/dags/{CHAT}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["create_batch"],
            "only_failed": False,
            "include_downstream": False,
            "reset_dag_runs": True,
        },
    )
    deadline = time.monotonic() + 90
    ti: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ti = airflow.task_instance(CHAT, run_id, "create_batch")
        if ti["try_number"] >= 2 and ti["state"] == "success":
            break
        time.sleep(0.3)
    assert ti["try_number"] >= 2 and ti["state"] == "success", f"{ti}\n{airflow.diagnostics()}"
    assert airflow.wait_for_run(CHAT, run_id, timeout=60) == "success"

    assert airflow.xcom(CHAT, run_id, "create_batch") == batch_id
    assert len(airflow.emulator_batches()) == batches_before, "the second try created another batch"
    assert len(airflow.emulator_files()) == files_before, "the second try uploaded the input again"
    assert "Reusing batch" in airflow.task_log(CHAT, run_id, "create_batch", try_number=ti["try_number"])


def test_api_key_appears_nowhere(airflow: AirflowStack) -> None:
    key = airflow.api_key
    assert key.startswith("sk-e2e-") and len(key) > 30

    # Task logs, trigger logs, component (scheduler/triggerer/api-server/dag-processor) output, the
    # SQLite database as bytes (XComs, rendered fields, dag run conf...), downloaded files.
    leaks = airflow.files_containing(key, [airflow.home])
    assert leaks == [], f"API key found in {leaks}"

    # XCom values through the REST API.
    entries = airflow.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries", params={"limit": 1000})
    assert entries["total_entries"] > 10
    for entry in entries["xcom_entries"]:
        value = airflow.xcom(entry["dag_id"], entry["run_id"], entry["task_id"], entry["key"], entry["map_index"])
        assert key not in json.dumps(value, default=str), entry

    # Rendered template fields of every task instance.
    tis = airflow.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params={"limit": 1000})["task_instances"]
    assert any(ti.get("rendered_fields") for ti in tis)
    for ti in tis:
        assert key not in json.dumps(ti.get("rendered_fields"), default=str), ti["task_id"]

    # Trigger kwargs (decrypted, as the triggerer reads them) seen while tasks were deferred, and now.
    snapshot_triggers(airflow)
    assert TRIGGER_SNAPSHOTS, "no trigger row was ever captured"
    for _id, classpath, kwargs in TRIGGER_SNAPSHOTS:
        assert key not in kwargs, classpath
        if "OpenAIBatchTrigger" in classpath:
            assert "openai_default" in kwargs
