"""The production leg's sensors (``tests/e2e/test_production_topology.py``): one deferrable sensor per batch id
in the run's ``batch_ids`` param (a mapped task), each cancelling its batch if a user kills it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor

#: Seconds between polls: the triggerer's poller asks for up to 100 batches a request (a list page).
POKE_INTERVAL = 2.0


@dag(
    dag_id="openai_batch_prod_sensors",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "test"],
    params={"batch_ids": Param([], type="array")},
    max_active_tasks=1000,
)
def openai_batch_prod_sensors() -> None:
    @task
    def batch_ids(**context: Any) -> list[str]:
        return [str(b) for b in context["params"]["batch_ids"]]

    OpenAIBatchSensor.partial(
        task_id="wait", deferrable=True, poke_interval=POKE_INTERVAL, cancel_on_kill=True, max_active_tis_per_dag=1000
    ).expand(batch_id=batch_ids())


openai_batch_prod_sensors_dag = openai_batch_prod_sensors()
