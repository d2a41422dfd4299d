"""One task creates the batch and waits for it: ``wait_for_completion=True, deferrable=True``.

``OpenAIBatchCreateOperator`` uploads the input, creates the batch, pushes ``batch_id`` at once, then
defers to the triggerer until the batch is terminal and judges it like the sensor would (failed,
expired or cancelled batches fail the task). Killing the deferred task (marking it failed or success,
clearing it) cancels the batch it created (``cancel_on_kill=True``, Airflow 3.3+). A download task then
fetches the output and a ``@task`` reads it.

Trigger with ``{"batch_metadata": {...}}`` to tag the batch (on the local emulator
``{"batch_metadata": {"emulator": "hold"}}`` keeps it running until cancelled). Environment variables:
see ``example_dags/__init__.py`` (``OPENAI_BATCH_POLL_INTERVAL``, default 60 s).
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_openai_batch.batch_input import (
    CHAT_COMPLETIONS,
    build_chat_requests,
    read_results,
    write_batch_input,
)
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator, OpenAIBatchDownloadOperator

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")
MODEL = os.environ.get("OPENAI_BATCH_EXAMPLES_CHAT_MODEL", "gpt-4o-mini")

QUESTIONS = [
    "Name a prime number larger than 100.",
    "What colour is the sky on a clear day?",
    "Give one synonym for 'fast'.",
]


@dag(
    dag_id="openai_batch_wait_in_create",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "example"],
    params={
        "batch_metadata": Param({}, type="object", description="Extra metadata for the batch (string values)."),
    },
    doc_md=__doc__,
)
def openai_batch_wait_in_create() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        """Write the questions as chat requests ``q0``, ``q1``, ... into a run-specific folder."""
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "input.jsonl"
        prompts = ((f"q{i}", question) for i, question in enumerate(QUESTIONS))
        write_batch_input(build_chat_requests(prompts, model=MODEL), path, endpoint=CHAT_COMPLETIONS)
        return {
            "input_file": str(path),
            "run_dir": str(run_dir),
            "metadata": dict(context["params"]["batch_metadata"]),
        }

    prepared = write_input()

    create_and_wait = OpenAIBatchCreateOperator(
        task_id="create_and_wait",
        endpoint=CHAT_COMPLETIONS,
        input_file=prepared["input_file"],
        metadata=prepared["metadata"],
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        cancel_on_kill=True,
    )

    download = OpenAIBatchDownloadOperator(
        task_id="download_results",
        batch_id=create_and_wait.output,
        destination=prepared["run_dir"],
    )

    @task
    def answers(files: dict[str, Any]) -> dict[str, str]:
        """``custom_id -> answer`` for every request."""
        paths = [files[kind]["path"] for kind in ("output", "error") if files.get(kind)]
        return {cid: (r.text or r.error_message or "") for cid, r in sorted(read_results(*paths).items())}

    answers(download.output)


openai_batch_wait_in_create_dag = openai_batch_wait_in_create()
