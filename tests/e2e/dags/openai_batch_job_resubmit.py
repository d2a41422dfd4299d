"""A job whose lines partly fail with a server error (on the emulator), resubmitted in follow-up rounds.

``write_input`` writes ``requests`` chat requests carrying ``emulator_error_rate``: that share of lines is
answered 500 by the emulator, drawn per line, place and input file, so a resubmitted line draws again.
``run_job`` runs them in shards of 10 requests with up to two resubmission rounds. Every batch carries the run's
``batch_metadata`` (``{"emulator": "slow"}`` keeps each batch running ~15 s, long enough to clear the task
while a round runs). ``cancel_on_kill=False``: a clear then leaves the batches running, as a user who clears
to run the task again (not to stop it) wants, and the cleared task must find every batch again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task
from job_input import POLL_INTERVAL, write_chat_input

from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator


@dag(
    dag_id="openai_batch_job_resubmit",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "test"],
    params={
        "requests": Param(40, type="integer", minimum=1),
        "error_rate": Param(0.3, type="number", minimum=0, maximum=1),
        "batch_metadata": Param({}, type="object"),
    },
)
def openai_batch_job_resubmit() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        rate = float(context["params"]["error_rate"])
        return write_chat_input(context, max_completion_tokens=50, emulator_error_rate=rate)

    prepared = write_input()
    OpenAIBatchJobOperator(
        task_id="run_job",
        endpoint="/v1/chat/completions",
        input_file=prepared["input_file"],
        destination=prepared["run_dir"],
        metadata=prepared["metadata"],
        max_requests_per_batch=10,
        max_resubmits=2,
        cancel_on_kill=False,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )


openai_batch_job_resubmit_dag = openai_batch_job_resubmit()
