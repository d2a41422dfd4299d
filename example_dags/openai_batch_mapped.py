"""Dynamic task mapping: several input files, one batch each, results gathered at the end.

A ``@task`` splits the prompts into shards and writes one JSONL file per shard; create is
``.partial(...).expand_kwargs(...)``-ed over ``{"input_file", "metadata"}`` dicts, then sensor and download
are ``.expand(batch_id=create.output)``-ed, so each shard is its own batch (useful beyond 50,000
requests or 200 MB per batch). Each mapped create has its own idempotency
key (the map index is part of it). A final ``@task`` reads every downloaded file and checks that
every prompt got exactly one result.

Trigger with ``{"batch_metadata": {...}}`` to tag every batch. Environment variables: see
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

#: 9 prompts in shards of 3: three batches.
PROMPTS = {f"item-{i:02d}": f"Write a one-line product description for item number {i}." for i in range(9)}
SHARD_SIZE = 3


@dag(
    dag_id="openai_batch_mapped",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "example"],
    params={
        "batch_metadata": Param({}, type="object", description="Extra metadata for every batch (string values)."),
    },
    doc_md=__doc__,
)
def openai_batch_mapped() -> None:
    @task
    def write_shards(**context: Any) -> list[dict[str, Any]]:
        """One input file per shard of ``SHARD_SIZE`` prompts; returns create's kwargs for each."""
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        items = sorted(PROMPTS.items())
        metadata = dict(context["params"]["batch_metadata"])
        shards = []
        for shard, start in enumerate(range(0, len(items), SHARD_SIZE)):
            path = run_dir / f"input_{shard}.jsonl"
            write_batch_input(
                build_chat_requests(items[start : start + SHARD_SIZE], model=MODEL), path, endpoint=CHAT_COMPLETIONS
            )
            shards.append({"input_file": str(path), "metadata": {**metadata, "shard": str(shard)}})
        return shards

    @task
    def results_dir(**context: Any) -> str:
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        (run_dir / "results").mkdir(parents=True, exist_ok=True)
        return str(run_dir / "results")

    create = OpenAIBatchCreateOperator.partial(task_id="create_batch", endpoint=CHAT_COMPLETIONS).expand_kwargs(
        write_shards()
    )
    wait = OpenAIBatchSensor.partial(task_id="wait_for_batch", deferrable=True, poke_interval=POLL_INTERVAL).expand(
        batch_id=create.output
    )
    download = OpenAIBatchDownloadOperator.partial(task_id="download_results", destination=results_dir()).expand(
        batch_id=create.output
    )

    @task
    def gather(downloads: list[dict[str, Any]]) -> dict[str, Any]:
        """Read every batch's files into one ``custom_id -> result`` map and check it is complete."""
        paths = [d[kind]["path"] for d in downloads for kind in ("output", "error") if d.get(kind)]
        results = read_results(*paths)
        missing = sorted(set(PROMPTS) - set(results))
        if missing:
            raise ValueError(f"no result for {missing}")
        return {"batches": len(downloads), "results": len(results), "succeeded": sum(r.ok for r in results.values())}

    wait >> download
    gather(download.output)


openai_batch_mapped_dag = openai_batch_mapped()
