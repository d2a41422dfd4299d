"""A job's resubmission rounds in a real Airflow 3: cleared while its first round of follow-up batches runs,
the task runs again and finds every batch it made (shards and follow-ups alike): no batch is created twice.

The connection carries an enqueued-request limit of two shards (``max_enqueued_requests`` extra), and the
emulator enforces the same limit: a batch over it would fail with ``request_limit_exceeded``. The shards of
every round, and the second try's, are admitted under it."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.hooks.validation import IDEMPOTENCY_METADATA_KEY
from tests._kit.e2e_stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(480)]

DAGS = Path(__file__).parent / "dags"
JOB = "openai_batch_job_resubmit"
TASK = "run_job"
#: 40 lines in shards of 10; 30 % of lines answer 500 in a round (drawn again each time a line is sent).
SHARDS = 4
#: Every batch lasts ~15 s (20 x the stack's 0.25 s phases, three phases): time to clear while a round runs.
CONF = {"requests": 40, "error_rate": 0.3, "batch_metadata": {"emulator": "slow"}}
#: Requests enqueued per model at most: two shards of 10.
REQUEST_LIMIT = 20


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-home"),
        dags_folder=DAGS,
        expected_dag_ids=(JOB,),
        emulator_args=("--enqueued-request-limit", str(REQUEST_LIMIT)),
        connection_extra={"max_enqueued_requests": REQUEST_LIMIT},
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def batch_ids(airflow: AirflowStack, run_id: str) -> list[str]:
    try:
        return list(airflow.xcom(JOB, run_id, TASK, key="batch_ids"))
    except Exception:  # not pushed yet
        return []


def test_clearing_mid_resubmission_creates_no_batch_twice(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(JOB, CONF)
    deadline = time.monotonic() + 180
    ids: list[str] = []
    while time.monotonic() < deadline and len(ids) <= SHARDS:
        ids = batch_ids(airflow, run_id)
        time.sleep(0.3)
    assert len(ids) > SHARDS, f"no resubmission round started: {ids}\n{airflow.diagnostics()}"
    follow_ups = ids[SHARDS:]
    running = [airflow.emulator_get(f"/batches/{b}")["status"] for b in follow_ups]
    assert set(running) <= {"validating", "in_progress", "finalizing"}, running  # cleared mid-round

    airflow.api(
        "POST",
        f"/api/v2/dags/{JOB}/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": run_id, "task_ids": [TASK], "only_failed": False},
    )
    deadline = time.monotonic() + 240
    ti: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ti = airflow.task_instance(JOB, run_id, TASK)
        if ti["try_number"] >= 2 and ti["state"] in {"success", "failed"}:
            break
        time.sleep(0.5)
    assert ti["try_number"] >= 2 and ti["state"] == "success", f"{ti}\n{airflow.diagnostics()}"

    batches = [b for b in airflow.emulator_batches() if (b.get("metadata") or {}).get(IDEMPOTENCY_METADATA_KEY)]
    per_key = collections.Counter(b["metadata"][IDEMPOTENCY_METADATA_KEY] for b in batches)
    duplicates = {key: n for key, n in per_key.items() if n > 1}
    print(f"\nbatches: {len(batches)}, keys: {len(per_key)}, duplicates: {len(duplicates)}")
    assert duplicates == {}, "the clear created a batch again"
    # Nothing was cancelled, and none failed with request_limit_exceeded: never more than the limit in flight.
    assert {b["status"] for b in batches} == {"completed"}

    manifest = airflow.xcom(JOB, run_id, TASK)
    rounds = [r["requests"] for r in manifest["rounds"]]
    print(f"requests per round: {rounds}")
    assert rounds[0] == 40 and len(rounds) >= 2 and rounds[1] > 0
    assert manifest["verdict"] == "succeed" and manifest["totals"]["batches"] == len(batches)
    assert manifest["capacity"]["limits"]["max_enqueued_requests"] == REQUEST_LIMIT
    # The second try found the shards and the first round's follow-ups again, by their keys.
    reused = {s["batch_id"] for s in manifest["shards"] if s["reused"]}
    assert set(ids) <= reused
    assert [b for b in manifest["shards"] if b["round"] == 1] and all(
        s["reused"] for s in manifest["shards"] if s["round"] <= 1
    )
