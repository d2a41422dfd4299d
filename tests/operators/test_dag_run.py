"""A DAG create -> sensor (deferrable) -> download runs green under ``dag.test()`` against the emulator.

``dag.test()`` needs a migrated Airflow database and the DAG file inside the configured dags folder, so it runs
in a subprocess with its own ``AIRFLOW_HOME`` under ``tmp_path``; the emulator runs in this process and the
subprocess reaches it over loopback. The subprocess prints what it found as JSON on its last stdout line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.batches import write_jsonl

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import json
    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_provider_openai_batch.operators.batch import (
        OpenAIBatchCreateOperator,
        OpenAIBatchDownloadOperator,
    )
    from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor

    with DAG(dag_id="openai_batch_e2e", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:
        create = OpenAIBatchCreateOperator(
            task_id="create", endpoint="/v1/chat/completions", input_file=INPUT_FILE, poll_interval=0.2
        )
        wait = OpenAIBatchSensor(
            task_id="wait",
            batch_id="{{ ti.xcom_pull(task_ids='create', key='batch_id') }}",
            deferrable=True,
            poke_interval=0.2,
            timeout=120,
        )
        download = OpenAIBatchDownloadOperator(
            task_id="download", batch_id="{{ ti.xcom_pull(task_ids='create') }}", destination=RESULTS_DIR
        )
        create >> wait >> download


    if __name__ == "__main__":
        from sqlalchemy import select

        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        run = dag.test()
        with create_session() as session:
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
            rows = session.execute(
                select(XComModel.task_id, XComModel.key, XComModel.value).where(
                    XComModel.dag_id == dag.dag_id, XComModel.run_id == run.run_id
                )
            ).all()
        xcoms = {f"{row.task_id}.{row.key}": XComModel.deserialize_value(row) for row in rows}
        print(json.dumps({"run_state": str(run.state), "states": states, "xcoms": xcoms}, default=str))
    """
)


def run_airflow(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_create_sensor_download_dag_runs_green(emulator: EmulatorServer, tmp_path: Path) -> None:
    home, dags, results = tmp_path / "airflow_home", tmp_path / "dags", tmp_path / "results"
    for folder in (home, dags, results):
        folder.mkdir()
    input_file = write_jsonl(tmp_path / "requests.jsonl", 6, failing=2)
    header = f"INPUT_FILE = {str(input_file)!r}\nRESULTS_DIR = {str(results)!r}\n"
    dag_path = dags / "openai_batch_e2e.py"
    dag_path.write_text(
        DAG_FILE.replace("from __future__ import annotations\n", "from __future__ import annotations\n" + header, 1)
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and "proxy" not in k.lower()}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        NO_PROXY="127.0.0.1,localhost",
        AIRFLOW_CONN_OPENAI_DEFAULT=json.dumps(
            {
                "conn_type": "openai_batch",
                "password": emulator.api_key,
                "host": emulator.base_url,
                "extra": {"backoff_factor": 0.01, "backoff_max": 0.05},
            }
        ),
    )
    migrated = run_airflow(["-m", "airflow", "db", "migrate"], env, tmp_path, timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    # Airflow 3.1's dag.test() runs only a DAG that is already serialized (3.3 serializes it itself).
    serialized = run_airflow(["-m", "airflow", "dags", "reserialize"], env, tmp_path, timeout=180)
    assert serialized.returncode == 0, serialized.stderr[-3000:]

    ran = run_airflow([str(dag_path)], env, tmp_path, timeout=240)

    assert ran.returncode == 0, (ran.stdout[-3000:], ran.stderr[-3000:])
    report: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["run_state"].endswith("success"), report
    assert report["states"] == {"create": "success", "wait": "success", "download": "success"}, report

    (batch_id,) = emulator.batches
    batch = emulator.get_batch(batch_id)
    assert batch["status"] == "completed"
    xcoms = report["xcoms"]
    assert xcoms["create.batch_id"] == xcoms["create.return_value"] == batch_id
    assert xcoms["wait.return_value"] == batch["output_file_id"]
    assert xcoms["wait.error_file_id"] == batch["error_file_id"]
    assert xcoms["wait.batch"]["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    download = xcoms["download.return_value"]
    assert download["output"]["lines"] == 4 and download["error"]["lines"] == 2
    assert (results / f"{batch_id}_output.jsonl").read_bytes() == emulator.file_content(batch["output_file_id"])
    assert emulator.counters["files_uploaded"] == 1
