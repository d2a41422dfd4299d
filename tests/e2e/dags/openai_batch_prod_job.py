"""The production leg's job (``tests/e2e/test_production_topology.py``): ``requests`` chat lines in shards of 10.

``write_input`` writes the run's input; ``run_job`` runs it deferrable, with one retry one second after a failed
try (a worker killed mid-merge fails the try once the scheduler misses its heartbeats; the retry runs on another
worker). Every batch carries the run's ``batch_metadata`` (``{"emulator": "slow"}`` keeps a batch running longer,
``{"emulator": "hold"}`` until it is cancelled).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from job_input import POLL_INTERVAL, write_chat_input

from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

#: Requests per shard batch.
PER_SHARD = 10


@dag(
    dag_id="openai_batch_prod_job",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "test"],
    params={"requests": Param(60, type="integer", minimum=1), "batch_metadata": Param({}, type="object")},
)
def openai_batch_prod_job() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        return write_chat_input(context)

    prepared = write_input()
    OpenAIBatchJobOperator(
        task_id="run_job",
        endpoint="/v1/chat/completions",
        input_file=prepared["input_file"],
        destination=prepared["run_dir"],
        metadata=prepared["metadata"],
        max_requests_per_batch=PER_SHARD,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


openai_batch_prod_job_dag = openai_batch_prod_job()
