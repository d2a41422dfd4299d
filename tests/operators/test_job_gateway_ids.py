"""OpenAIBatchJobOperator against a gateway whose ids are longer than a file name may be (LiteLLM-style)."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.batches import write_jsonl
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op
from tests._kit.ti import FakeTI, context


def test_a_job_merges_results_whose_file_ids_are_330_characters(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    # Every result file is downloaded to a scratch file before the merge: named after the raw id, the merge
    # failed with "File name too long" after every shard had run and been billed.
    openai_conn.set_id_length(330)
    write_jsonl(tmp_path / "in.jsonl", 6, failing=1)

    manifest = job_op(tmp_path, max_requests_per_batch=3).execute(context(FakeTI()))

    assert all(len(shard["batch_id"]) == 330 for shard in manifest["shards"]) and len(manifest["shards"]) == 2
    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(1, 6)]
    assert ids_of(manifest["error"]["path"]) == ["req-0"]
