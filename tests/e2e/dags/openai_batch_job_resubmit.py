"""A job whose lines partly fail with a server error (on the emulator), resubmitted in follow-up rounds.

``write_input`` writes ``requests`` chat requests carrying ``emulator_error_rate``: that share of lines is
answered 500 by the emulator, drawn per line and place, so a resubmitted line draws again. ``run_job`` runs
them in shards of 10 requests with up to two resubmission rounds. Every batch carries the run's
``batch_metadata`` (``{"emulator": "slow"}`` keeps each batch running ~15 s, long enough to clear the task
while a round runs). ``cancel_on_kill=False``: a clear then leaves the batches running, as a user who clears
to run the task again (not to stop it) wants, and the cleared task must find every batch again.
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

from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
DATA_DIR = os.environ.get("OPENAI_BATCH_EXAMPLES_DIR") or os.path.join(tempfile.gettempdir(), "openai-batch-examples")


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
        run_dir = Path(DATA_DIR) / context["dag"].dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", context["run_id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "input.jsonl"
        rate = float(context["params"]["error_rate"])
        with path.open("w", encoding="utf-8") as out:
            for i in range(int(context["params"]["requests"])):
                body = {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Summarize ticket {i}"}],
                    "max_completion_tokens": 50,
                    "emulator_error_rate": rate,
                }
                line = {"custom_id": f"t{i:04d}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                out.write(json.dumps(line) + "\n")
        return {"input_file": str(path), "run_dir": str(run_dir), "metadata": dict(context["params"]["batch_metadata"])}

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
