"""Cancel a running batch with ``OpenAIBatchCancelOperator``.

A batch is created (no waiting), then cancelled; the cancel task waits (deferred, in the triggerer)
until the batch is ``cancelled`` and returns that status, and pushes ``output_file_id`` for any partial
results and ``batch``. A batch that already finished is reported, not treated as an error.

So that there is something to cancel on the local emulator, the batch is created with
``{"emulator": "hold"}`` metadata (it stays ``in_progress`` until cancelled) when
``OPENAI_BATCH_EXAMPLES_EMULATOR=1``; on a real service a fresh batch is simply cancelled at once.
Override with ``{"batch_metadata": {...}}`` when triggering. Environment variables: see
``example_dags/__init__.py``.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_openai_batch.batch_input import CHAT_COMPLETIONS, build_chat_requests, write_batch_input
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCancelOperator, OpenAIBatchCreateOperator

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")
MODEL = os.environ.get("OPENAI_BATCH_EXAMPLES_CHAT_MODEL", "gpt-4o-mini")
ON_EMULATOR = os.environ.get("OPENAI_BATCH_EXAMPLES_EMULATOR", "") == "1"


@dag(
    dag_id="openai_batch_cancel",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "example"],
    params={
        "batch_metadata": Param(
            {"emulator": "hold"} if ON_EMULATOR else {},
            type="object",
            description="Extra metadata for the batch (string values).",
        ),
    },
    doc_md=__doc__,
)
def openai_batch_cancel() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "input.jsonl"
        prompts = {f"p{i}": f"Count to {i}." for i in range(1, 5)}
        write_batch_input(build_chat_requests(prompts, model=MODEL), path, endpoint=CHAT_COMPLETIONS)
        return {"input_file": str(path), "metadata": dict(context["params"]["batch_metadata"])}

    prepared = write_input()

    create = OpenAIBatchCreateOperator(
        task_id="create_batch",
        endpoint=CHAT_COMPLETIONS,
        input_file=prepared["input_file"],
        metadata=prepared["metadata"],
    )

    cancel = OpenAIBatchCancelOperator(
        task_id="cancel_batch",
        batch_id=create.output,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    @task
    def report(status: str, **context: Any) -> dict[str, Any]:
        """The final status and how far the batch got."""
        batch = context["ti"].xcom_pull(task_ids="cancel_batch", key="batch") or {}
        return {"batch_id": batch.get("id"), "status": status, "request_counts": batch.get("request_counts")}

    report(cancel.output)


openai_batch_cancel_dag = openai_batch_cancel()
