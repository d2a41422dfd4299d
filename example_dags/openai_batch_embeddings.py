"""An embeddings batch (``/v1/embeddings``): texts in, one vector per ``custom_id`` out.

``build_embedding_requests`` makes the input (``extra_body`` can add ``dimensions`` or
``encoding_format``); create waits in the triggerer (``wait_for_completion=True, deferrable=True``);
the output is downloaded and ``BatchResult.embedding`` decodes each vector (base64 ones too). The last
task returns each text's vector length and the first values.

Trigger with ``{"batch_metadata": {...}}`` to tag the batch. Environment variables: see
``example_dags/__init__.py`` (``OPENAI_BATCH_POLL_INTERVAL``, default 60 s;
``OPENAI_BATCH_EXAMPLES_EMBEDDING_MODEL``, default ``text-embedding-3-small``).
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
    EMBEDDINGS,
    build_embedding_requests,
    read_results,
    write_batch_input,
)
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator, OpenAIBatchDownloadOperator

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")
MODEL = os.environ.get("OPENAI_BATCH_EXAMPLES_EMBEDDING_MODEL", "text-embedding-3-small")

DOCUMENTS = {
    "doc-airflow": "Apache Airflow schedules and monitors workflows.",
    "doc-batch": "The Batch API runs requests asynchronously at half the price.",
    "doc-triggerer": "Deferred tasks wait in the triggerer without using a worker slot.",
    "doc-jsonl": "Each line of a JSONL file is one JSON object.",
}


@dag(
    dag_id="openai_batch_embeddings",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "example", "embeddings"],
    params={
        "batch_metadata": Param({}, type="object", description="Extra metadata for the batch (string values)."),
    },
    doc_md=__doc__,
)
def openai_batch_embeddings() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "input.jsonl"
        write_batch_input(build_embedding_requests(DOCUMENTS, model=MODEL), path, endpoint=EMBEDDINGS)
        return {
            "input_file": str(path),
            "run_dir": str(run_dir),
            "metadata": dict(context["params"]["batch_metadata"]),
        }

    prepared = write_input()

    create = OpenAIBatchCreateOperator(
        task_id="create_and_wait",
        endpoint=EMBEDDINGS,
        input_file=prepared["input_file"],
        metadata=prepared["metadata"],
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    download = OpenAIBatchDownloadOperator(
        task_id="download_results",
        batch_id=create.output,
        destination=prepared["run_dir"],
    )

    @task
    def vectors(files: dict[str, Any]) -> dict[str, Any]:
        """``custom_id -> {"dims": n, "head": first 3 values}`` for every document."""
        paths = [files[kind]["path"] for kind in ("output", "error") if files.get(kind)]
        results = read_results(*paths)
        out: dict[str, Any] = {}
        for custom_id in sorted(DOCUMENTS):
            result = results.get(custom_id)
            vector = result.embedding if result is not None else None
            out[custom_id] = {"dims": len(vector), "head": vector[:3]} if vector else None
        return out

    vectors(download.output)


openai_batch_embeddings_dag = openai_batch_embeddings()
