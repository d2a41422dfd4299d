"""One input larger than a batch, as one task: ``OpenAIBatchJobOperator`` splits, waits once, merges in order.

``write_input`` writes 2,500 chat requests (``requests`` param). ``run_job`` checks every line, splits the
input into shards (here at most 1,000 requests each, so the small example makes three batches; leave
``max_requests_per_batch`` unset and the connection's limits apply: 50,000 requests or 200 MB per batch on
OpenAI), creates one batch per shard, defers once while one trigger watches every shard batch, then merges
the results into ``input__<run id>_output.jsonl`` / ``input__<run id>_error.jsonl`` in input order and
returns the manifest.
A retry or a clear reuses the shard batches that exist; killing the deferred task cancels the running ones.
``check_order`` confirms the merged output follows the input line by line.

Trigger with ``{"requests": N}`` for another size, or ``{"batch_metadata": {...}}`` to tag every batch (on
the local emulator ``{"batch_metadata": {"emulator": "hold"}}`` keeps them running until cancelled).
Environment variables: see ``example_dags/__init__.py``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_openai_batch.batch_input import CHAT_COMPLETIONS, build_chat_requests, write_batch_input
from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")
MODEL = os.environ.get("OPENAI_BATCH_EXAMPLES_CHAT_MODEL", "gpt-4o-mini")
#: Requests per shard batch, kept small so that the example's input makes several batches.
SHARD_REQUESTS = 1_000


@dag(
    dag_id="openai_batch_large_job",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["openai", "batch", "example"],
    params={
        "requests": Param(2_500, type="integer", minimum=1, description="How many requests to write."),
        "batch_metadata": Param({}, type="object", description="Extra metadata for every batch (string values)."),
    },
    doc_md=__doc__,
)
def openai_batch_large_job() -> None:
    @task(multiple_outputs=True)
    def write_input(**context: Any) -> dict[str, Any]:
        """Write ``requests`` chat requests ``t000000``, ``t000001``, ... into a run-specific folder."""
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "input.jsonl"
        count = int(context["params"]["requests"])
        prompts = ((f"t{i:06d}", f"Summarize ticket {i}: the printer on floor {i % 7} jams.") for i in range(count))
        write_batch_input(build_chat_requests(prompts, model=MODEL, max_tokens=100), path, endpoint=CHAT_COMPLETIONS)
        return {"input_file": str(path), "run_dir": str(run_dir), "metadata": dict(context["params"]["batch_metadata"])}

    prepared = write_input()

    job = OpenAIBatchJobOperator(
        task_id="run_job",
        endpoint=CHAT_COMPLETIONS,
        input_file=prepared["input_file"],
        destination=prepared["run_dir"],
        metadata=prepared["metadata"],
        max_requests_per_batch=SHARD_REQUESTS,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    @task
    def check_order(manifest: dict[str, Any], input_file: str) -> dict[str, Any]:
        """Read input and merged output side by side: answers must follow the input's order, line by line."""
        answered = 0
        with open(input_file, encoding="utf-8") as inputs, open(manifest["output"]["path"], encoding="utf-8") as out:
            expected = (json.loads(line)["custom_id"] for line in inputs)
            for line in out:
                custom_id = json.loads(line)["custom_id"]
                if custom_id not in expected:  # advances the input iterator: an answer out of order is not found
                    raise ValueError(f"{custom_id} is out of input order in {manifest['output']['path']}")
                answered += 1
        return {
            "batches": [shard["batch_id"] for shard in manifest["shards"]],
            "lines": [[shard["first_line"], shard["last_line"]] for shard in manifest["shards"]],
            "answered": answered,
            "failed": manifest["totals"]["failed"],
            "in_input_order": True,
            "output": manifest["output"]["path"],
        }

    check_order(job.output, prepared["input_file"])


openai_batch_large_job_dag = openai_batch_large_job()
