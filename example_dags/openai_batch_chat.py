"""Chat completions batch, step by step: build the input, create, wait in the triggerer, download, read.

Shows the four building blocks as separate tasks:

1. a ``@task`` turns a list of prompts into a JSONL input file (``build_chat_requests`` +
   ``write_batch_input``, which validates every line) in a run-specific folder;
2. ``OpenAIBatchCreateOperator(input_file=...)`` validates and uploads it, then creates the batch
   (idempotent: a retry reuses the batch instead of paying for a second one);
3. ``OpenAIBatchSensor(deferrable=True)`` waits in the triggerer without holding a worker slot and
   returns the batch's ``output_file_id``;
4. ``OpenAIBatchDownloadOperator`` streams the output (and error) file to disk, and a last ``@task``
   reads the results by ``custom_id`` (``read_results``) and returns a small summary.

Trigger with ``{"batch_metadata": {...}}`` to tag the batch (on the local emulator,
``{"batch_metadata": {"emulator": "slow"}}`` makes it take 20x longer). Environment variables: see
``example_dags/__init__.py`` (``OPENAI_BATCH_POLL_INTERVAL``, default 60 s).
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
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")
MODEL = os.environ.get("OPENAI_BATCH_EXAMPLES_CHAT_MODEL", "gpt-4o-mini")

PROMPTS = {
    "capital-fr": "What is the capital of France? Answer in one word.",
    "haiku-airflow": "Write a haiku about data pipelines.",
    "translate-de": "Translate 'good morning' into German.",
    "sum": "What is 17 + 25? Answer with the number only.",
    "define-batch": "In one sentence, what is batch processing?",
}


@dag(
    dag_id="openai_batch_chat",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "example"],
    params={
        "batch_metadata": Param({}, type="object", description="Extra metadata for the batch (string values)."),
    },
    doc_md=__doc__,
)
def openai_batch_chat() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        """Write one chat request per prompt into ``<DATA_DIR>/<dag>/<run>/input.jsonl``."""
        run_id = re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "input.jsonl"
        summary = write_batch_input(
            build_chat_requests(PROMPTS, model=MODEL, system="You are concise.", max_tokens=100),
            path,
            endpoint=CHAT_COMPLETIONS,
        )
        return {
            "input_file": str(path),
            "run_dir": str(run_dir),
            "requests": summary.requests,
            "metadata": dict(context["params"]["batch_metadata"]),
        }

    prepared = write_input()

    create = OpenAIBatchCreateOperator(
        task_id="create_batch",
        endpoint=CHAT_COMPLETIONS,
        input_file=prepared["input_file"],
        metadata=prepared["metadata"],
    )

    wait = OpenAIBatchSensor(
        task_id="wait_for_batch",
        batch_id=create.output,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
    )

    download = OpenAIBatchDownloadOperator(
        task_id="download_results",
        batch_id=create.output,
        destination=prepared["run_dir"],
    )

    @task
    def summarize(files: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Match results to prompts by ``custom_id`` and return counts and the first answers."""
        paths = [files[kind]["path"] for kind in ("output", "error") if files.get(kind)]
        results = read_results(*paths)
        missing = sorted(set(PROMPTS) - set(results))
        batch = context["ti"].xcom_pull(task_ids="wait_for_batch", key="batch") or {}
        return {
            "batch_id": batch.get("id"),
            "status": batch.get("status"),
            "request_counts": batch.get("request_counts"),
            "output_path": files["output"]["path"] if files.get("output") else None,
            "results": len(results),
            "succeeded": sum(1 for r in results.values() if r.ok),
            "missing": missing,
            "answers": {cid: (r.text or r.error_message or "")[:120] for cid, r in sorted(results.items())},
        }

    wait >> download
    summarize(download.output)


openai_batch_chat_dag = openai_batch_chat()
