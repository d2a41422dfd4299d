"""A job's deadline in a real Airflow 3: batches stalled at 60 % while the task is deferred; the trigger wakes at
the deadline (a duration from the DAG run's start), the task cancels its own batches, waits through
``cancelling``, merges the 60 % and succeeds with the rest as ``deadline_exceeded`` (``on_deadline="partial"``).

The end is bounded by deadline + one poll interval + the cancelling phase + SLACK; SLACK covers the trigger
event's way back to a worker on a loaded 2-core machine (scheduler loop, executor, task start), not the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests._kit.e2e_stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(480)]

DAGS = Path(__file__).parent / "dags"
JOB = "openai_batch_job_deadline"
TASK = "run_job"
#: 40 lines in 4 shards of 10; every batch stalls at 60 % (6 of its 10 requests) until cancelled.
SHARDS, PER_SHARD = 4, 10
#: Seconds from the run's start: room for both tasks to start and submit on a loaded machine.
DEADLINE = 75
CONF = {"requests": SHARDS * PER_SHARD, "deadline_seconds": DEADLINE, "batch_metadata": {"emulator": "stall=60"}}
#: What a loaded machine may add between the trigger's event and the task's end (never a tight bound).
SLACK = 90.0


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    stack = AirflowStack(home=tmp_path_factory.mktemp("airflow-home"), dags_folder=DAGS, expected_dag_ids=(JOB,))
    with stack.running():
        yield stack


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_deferred_job_is_cut_at_its_deadline_and_merges_what_exists(airflow: AirflowStack) -> None:
    run_id = airflow.trigger(JOB, CONF)
    airflow.wait_for_ti_state(JOB, run_id, TASK, {"deferred"}, timeout=DEADLINE)  # waiting in the triggerer
    assert airflow.wait_for_run(JOB, run_id, timeout=DEADLINE + 240, interval=1.0) == "success", airflow.diagnostics()

    run = airflow.api("GET", f"/api/v2/dags/{JOB}/dagRuns/{run_id}")
    manifest = airflow.xcom(JOB, run_id, TASK)
    deadline = manifest["deadline"]
    due = moment(run["start_date"]) + timedelta(seconds=DEADLINE)
    assert abs((moment(deadline["at"]) - due).total_seconds()) < 1  # a duration counts from the run's start
    batch_ids = [shard["batch_id"] for shard in manifest["shards"]]
    assert len(batch_ids) == SHARDS and deadline["hit"] and deadline["cancelled"] == batch_ids
    assert {airflow.emulator_get(f"/batches/{b}")["status"] for b in batch_ids} == {"cancelled"}

    output = [json.loads(line) for line in Path(manifest["output"]["path"]).read_text().splitlines()]
    errors = [json.loads(line) for line in Path(manifest["error"]["path"]).read_text().splitlines()]
    assert len(output) == SHARDS * 6 and len(errors) == SHARDS * 4  # 60 % merged, the rest in the error file
    assert {e["error"]["code"] for e in errors} == {"deadline_exceeded"}
    every = sorted(line["custom_id"] for line in output + errors)
    assert every == [f"t{i:04d}" for i in range(SHARDS * PER_SHARD)]
    assert [line["custom_id"] for line in output] == sorted(line["custom_id"] for line in output)  # input order
    assert manifest["verdict"] == "succeed" and manifest["reason"] == "deadline"

    ti = airflow.task_instance(JOB, run_id, TASK)
    late = (moment(ti["end_date"]) - moment(deadline["at"])).total_seconds()
    cancelled_at = [airflow.emulator_get(f"/batches/{b}")["cancelling_at"] for b in batch_ids]
    print(
        f"\ndeadline {deadline['at']}: cancelled {min(cancelled_at) - moment(deadline['at']).timestamp():.0f}s "
        f"after it, task ended {late:.1f}s after it"
    )
    assert min(cancelled_at) >= int(moment(deadline["at"]).timestamp())  # not before the deadline
    assert 0 <= late <= airflow.poll_interval + airflow.phase_seconds + SLACK
    log = airflow.task_log(JOB, run_id, TASK, try_number=ti["try_number"])
    assert "passed with work unfinished" in log and "4 created, 0 reused" in log
