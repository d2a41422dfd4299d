"""Run by ``test_secrets.py`` in a subprocess with its own ``AIRFLOW_HOME``: ``dag.test()`` of a DAG that
creates, waits (deferred, the trigger runs inline), downloads, and polls with a wrong key, everything
logged at DEBUG. Prints one JSON line with the task states at the end.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys

# Every logger at DEBUG, the HTTP stacks included: the key must not show even there.
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
for name in ("urllib3", "requests", "httpx", "httpcore", "airflow_provider_openai_batch", "airflow"):
    logging.getLogger(name).setLevel(logging.DEBUG)

from airflow.sdk import DAG  # noqa: E402

from airflow_provider_openai_batch.operators.batch import (  # noqa: E402
    OpenAIBatchCreateOperator,
    OpenAIBatchDownloadOperator,
)
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor  # noqa: E402

BATCH_ID = "{{ ti.xcom_pull(task_ids='create', key='batch_id') }}"

with DAG("secret_hygiene", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    create = OpenAIBatchCreateOperator(
        task_id="create",
        endpoint="/v1/chat/completions",
        input_file=os.environ["REL_INPUT"],
        metadata={"purpose": "secret-hygiene"},
    )
    wait = OpenAIBatchSensor(task_id="wait", batch_id=BATCH_ID, deferrable=True, poke_interval=0.2)
    download = OpenAIBatchDownloadOperator(task_id="download", batch_id=BATCH_ID, destination=os.environ["REL_OUT"])
    wrong_key = OpenAIBatchSensor(
        task_id="wrong_key", batch_id=BATCH_ID, conn_id="openai_wrong", deferrable=False, poke_interval=0.2, timeout=10
    )
    create >> wait >> download
    create >> wrong_key

if __name__ == "__main__":
    run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()} if run is not None else {}
    print("RESULT " + json.dumps({"run_state": str(getattr(run, "state", None)), "tasks": states}), flush=True)
