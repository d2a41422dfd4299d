"""A job with a deadline that its batches cannot meet (on the emulator), cut at the deadline with partial results.

``write_input`` writes ``requests`` chat requests. ``run_job`` runs them in shards of 10 with
``deadline="{{ params.deadline_seconds }}"`` (a duration: seconds from the DAG run's start) and
``on_deadline="partial"``. Every batch carries the run's ``batch_metadata``: ``{"emulator": "stall=60"}`` holds
each batch at 60 % of its requests until it is cancelled, so the deadline always cuts the job: the deferred
task wakes at the deadline, cancels its batches, waits for them to end and merges what they answered, the
other lines in the error file as ``deadline_exceeded``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task
from job_input import POLL_INTERVAL, write_chat_input

from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator


@dag(
    dag_id="openai_batch_job_deadline",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "test"],
    params={
        "requests": Param(40, type="integer", minimum=1),
        "deadline_seconds": Param(90, type="integer", minimum=1),
        "batch_metadata": Param({}, type="object"),
    },
)
def openai_batch_job_deadline() -> None:
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
        max_requests_per_batch=10,
        deadline="{{ params.deadline_seconds }}",
        on_deadline="partial",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )


openai_batch_job_deadline_dag = openai_batch_job_deadline()
