"""OpenAIBatchJobOperator(max_enqueued_tokens=...): shard batches admitted under the enqueued-token limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow_compat import TaskDeferred
from batch_testkit import ENDPOINT, FakeTI, context, write_jsonl
from test_job_operator import ids, job_op, run_trigger

from airflow_provider_openai_batch.emulator import EmulatorServer, results
from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger


def shards(path: Path, per_shard: int) -> list[list[bytes]]:
    lines = path.read_bytes().splitlines(keepends=True)
    return [lines[i : i + per_shard] for i in range(0, len(lines), per_shard)]


def emulator_tokens(lines: list[bytes]) -> int:
    """The input tokens the emulator counts for these lines against its enqueued limit."""
    total = 0
    for raw in lines:
        line = json.loads(raw)
        answer = results.compute(ENDPOINT, line["body"], created=0, batch_id="b", custom_id=line["custom_id"])
        total += answer.input_tokens
    return total


def capacity_for_three(emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """40 lines in 10 shards of 4; the budget (client and emulator alike) holds 3 shards, never 4."""
    write_jsonl(tmp_path / "in.jsonl", 40)
    parts = shards(tmp_path / "in.jsonl", 4)
    sizes = [sum(len(line) for line in part) for part in parts]
    budget = 3 * max(sizes)
    assert len(parts) == 10 and budget < 4 * min(sizes)
    # The emulator fails a batch over 3 shards' tokens, and its phases are long enough for shards to overlap.
    monkeypatch.setattr(emulator.store, "enqueued_token_limit", 3 * max(emulator_tokens(p) for p in parts))
    monkeypatch.setattr(emulator.store, "phase_seconds", 0.2)
    return budget


def assert_all_completed_within_three(emulator: EmulatorServer, manifest: dict[str, Any]) -> None:
    batches = list(emulator.batches.values())
    assert len(batches) == 10 and {b["status"] for b in batches} == {"completed"}  # no token_limit_exceeded
    assert 1 <= max(emulator.store.peak_in_progress.values()) <= 3
    assert ids(manifest["output"]["path"]) == [f"req-{i}" for i in range(40)]
    assert manifest["totals"]["completed"] == 40 and len(manifest["shards"]) == 10
    assert manifest["capacity"]["wait_seconds"] > 0 and manifest["capacity"]["token_limit_retries"] == 0


def test_capacity_for_three_shards_keeps_at_most_three_in_flight(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = capacity_for_three(openai_conn, tmp_path, monkeypatch)

    manifest = job_op(tmp_path, max_requests_per_batch=4, max_enqueued_tokens=budget).execute(context())

    assert_all_completed_within_three(openai_conn, manifest)


def test_deferred_admission_submits_further_shards_as_earlier_ones_finish(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = capacity_for_three(openai_conn, tmp_path, monkeypatch)
    ti = FakeTI()

    def op() -> Any:
        return job_op(tmp_path, max_requests_per_batch=4, max_enqueued_tokens=budget, deferrable=True)

    with pytest.raises(TaskDeferred) as info:
        op().execute(context(ti))
    deferred, deferrals, manifest = info.value, 1, None
    while manifest is None:
        trigger = deferred.trigger
        assert isinstance(trigger, OpenAIBatchJobTrigger)
        assert 1 <= len(trigger.batch_ids) <= 3  # never more than three shard batches waited on at once
        (event,) = run_trigger(trigger)
        try:
            manifest = op().execute_complete(context(ti), event)
        except TaskDeferred as again:
            deferred, deferrals = again, deferrals + 1
            assert deferrals < 40
    assert deferrals >= 3  # the task woke and submitted more shards, then deferred again
    assert ti.xcoms["batch_ids"] == [s["batch_id"] for s in manifest["shards"]]
    assert_all_completed_within_three(openai_conn, manifest)


def test_a_shard_failing_with_token_limit_exceeded_is_resubmitted_after_a_back_off(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's budget holds two shards, the organization's limit (the emulator's) only one: the second
    # shard batch of a pair fails with token_limit_exceeded while the first runs.
    write_jsonl(tmp_path / "in.jsonl", 12)
    parts = shards(tmp_path / "in.jsonl", 4)
    budget = 2 * max(sum(len(line) for line in part) for part in parts)
    monkeypatch.setattr(openai_conn.store, "enqueued_token_limit", max(emulator_tokens(p) for p in parts) * 3 // 2)
    monkeypatch.setattr(openai_conn.store, "phase_seconds", 0.5)

    manifest = job_op(tmp_path, max_requests_per_batch=4, max_enqueued_tokens=budget).execute(context())

    failed = [b for b in openai_conn.batches.values() if b["status"] == "failed"]
    assert failed and all(b["errors"]["data"][0]["code"] == "token_limit_exceeded" for b in failed)
    assert manifest["capacity"]["token_limit_retries"] == len(failed)
    assert ids(manifest["output"]["path"]) == [f"req-{i}" for i in range(12)]
    assert manifest["error"] is None and manifest["verdict"] == "succeed"
    assert {s["status"] for s in manifest["shards"]} == {"completed"} and len(manifest["shards"]) == 3


def test_max_enqueued_tokens_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_enqueued_tokens"):
        job_op(tmp_path, max_enqueued_tokens=0)
