"""OpenAIBatchJobOperator(max_enqueued_tokens=..., max_enqueued_requests=...): shard batches, and the batches of
resubmission rounds, admitted under the enqueued limits (from the operator or the connection)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer, results
from airflow_provider_openai_batch.exceptions import InvalidConnectionError
from tests._kit.batches import ENDPOINT, write_jsonl
from tests._kit.connection import set_connection
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op, run_deferred, write_requests
from tests._kit.ti import FakeTI, context


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
    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(40)]
    assert manifest["totals"]["completed"] == 40 and len(manifest["shards"]) == 10
    assert manifest["capacity"]["wait_seconds"] > 0 and manifest["capacity"]["capacity_retries"] == 0


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

    manifest, deferrals = run_deferred(op, ti, budget_batches=3)  # never three shard batches waited on at once

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
    assert manifest["capacity"]["capacity_retries"] == len(failed)
    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(12)]
    assert manifest["error"] is None and manifest["verdict"] == "succeed"
    assert {s["status"] for s in manifest["shards"]} == {"completed"} and len(manifest["shards"]) == 3


def test_max_enqueued_tokens_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_enqueued_tokens must be a positive integer, got 0"):
        job_op(tmp_path, max_enqueued_tokens=0)
    with pytest.raises(ValueError, match=r"max_enqueued_requests\['gpt-4o'\] must be a positive integer"):
        job_op(tmp_path, max_enqueued_requests={"gpt-4o": "lots"})


def test_request_capacity_for_three_shards_keeps_at_most_three_in_flight(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 40)
    monkeypatch.setattr(openai_conn.store, "enqueued_request_limit", 12)  # the organization's: 3 shards of 4
    monkeypatch.setattr(openai_conn.store, "phase_seconds", 0.2)

    manifest = job_op(tmp_path, max_requests_per_batch=4, max_enqueued_requests=12).execute(context())

    assert_all_completed_within_three(openai_conn, manifest)  # none failed with request_limit_exceeded
    assert manifest["capacity"]["limits"] == {"max_enqueued_tokens": None, "max_enqueued_requests": 12}


def test_the_connection_extra_sets_the_limit_and_the_operator_replaces_it(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 24)
    monkeypatch.setattr(emulator.store, "enqueued_request_limit", 8)
    monkeypatch.setattr(emulator.store, "phase_seconds", 0.2)
    set_connection(monkeypatch, emulator.base_url, max_enqueued_requests={"gpt-4o-mini": 8})

    by_connection = job_op(tmp_path, max_requests_per_batch=4).execute(context())

    assert by_connection["capacity"]["limits"]["max_enqueued_requests"] == {"gpt-4o-mini": 8}
    assert len(by_connection["shards"]) == 6 and max(emulator.store.peak_in_progress.values()) <= 2
    assert {b["status"] for b in emulator.batches.values()} == {"completed"}

    emulator.store.peak_in_progress.clear()
    by_operator = job_op(tmp_path, max_enqueued_requests=5, destination=tmp_path / "again").execute(context())

    # Shards are cut to the operator's 5 requests, and one at a time runs (5 + 5 > 5).
    assert [s["requests"] for s in by_operator["shards"]] == [5, 5, 5, 5, 4]
    assert emulator.store.peak_in_progress == {"gpt-4o-mini": 1}
    assert ids_of(by_operator["output"]["path"]) == [f"req-{i}" for i in range(24)]


def test_a_bad_limit_on_the_connection_fails_before_anything_is_uploaded(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 4)
    set_connection(monkeypatch, emulator.base_url, max_enqueued_tokens={"gpt-4o-mini": 0})

    with pytest.raises(InvalidConnectionError, match=r"extra 'max_enqueued_tokens'\['gpt-4o-mini'\] must be"):
        job_op(tmp_path).execute(context())

    assert emulator.counters.files_uploaded == 0 and emulator.counters.batches_created == 0


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_a_resubmission_round_waits_for_capacity_like_the_input_shards(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    # 40 lines in 10 shards of 4, 30 % answering 500 per round: the rounds after the first have several
    # shards too, more than the budget of two shards (8 requests) lets run at once.
    write_requests(tmp_path / "in.jsonl", 40, emulator_error_rate=0.3)
    monkeypatch.setattr(openai_conn.store, "enqueued_request_limit", 8)
    monkeypatch.setattr(openai_conn.store, "phase_seconds", 0.2)

    def op() -> Any:
        return job_op(
            tmp_path, max_requests_per_batch=4, max_enqueued_requests=8, max_resubmits=3, deferrable=deferrable
        )

    if deferrable:
        manifest, deferrals = run_deferred(op, FakeTI(), budget_batches=2)
        assert deferrals >= 5
    else:
        manifest = op().execute(context())

    rounds = [r["requests"] for r in manifest["rounds"]]
    first_round = [s for s in manifest["shards"] if s["round"] == 1]
    assert rounds[0] == 40 and len(first_round) > 2  # more shards in the round than the budget holds
    assert {b["status"] for b in openai_conn.batches.values()} == {"completed"}  # no request_limit_exceeded
    peak = max(openai_conn.store.peak_in_progress.values())
    print(f"requests per round {rounds}, batches {len(openai_conn.batches)}, most in progress at once {peak} of 2")
    assert 1 <= peak <= 2
    assert len(openai_conn.batches) == len(manifest["shards"])  # each shard of each round: one batch
    round_files = [f for f in openai_conn.files.values() if ".r1." in f["filename"]]
    assert len(round_files) == len(first_round)  # each uploaded once, whatever the deferrals
    answered = ids_of(manifest["output"]["path"])
    assert answered == sorted(answered, key=lambda c: int(c.split("-")[1])) and manifest["resubmitted"] > 0


def test_a_clear_after_the_job_finds_every_batch_ended_and_waits_for_none(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 12)
    monkeypatch.setattr(openai_conn.store, "enqueued_request_limit", 4)
    ti = FakeTI()

    def op() -> Any:
        return job_op(tmp_path, max_requests_per_batch=4, max_enqueued_requests=4, deferrable=True)

    first, _ = run_deferred(op, ti, budget_batches=1)
    created = set(openai_conn.batches)

    ti.try_number = 2
    # Run again (a clear): each shard admitted finds its batch, already completed, which frees the capacity
    # at once; nothing is left to wait on, so the task ends without deferring.
    again = op().execute(context(ti))

    assert set(openai_conn.batches) == created and len(created) == 3
    assert [s["reused"] for s in again["shards"]] == [True] * 3 and again["verdict"] == "succeed"
    assert ids_of(again["output"]["path"]) == ids_of(first["output"]["path"]) == [f"req-{i}" for i in range(12)]
