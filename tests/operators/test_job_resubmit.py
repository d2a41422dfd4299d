"""OpenAIBatchJobOperator(max_resubmits=...): lines that failed for a passing reason run again; others never."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.xcom_keys import XCOM_MANIFEST
from tests._kit.airflow_compat import AirflowFailException, TaskDeferred
from tests._kit.batches import ENDPOINT, chat_line
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op, run_deferred, run_trigger, write_requests
from tests._kit.ti import FakeTI, context


def requests_sent(emulator: EmulatorServer) -> int:
    return sum(int(b["request_counts"]["total"]) for b in emulator.batches.values())


def test_server_errors_are_resubmitted_until_every_line_is_answered(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    # Deterministic: 6 of the 40 lines fail in the first round, 1 in the second, none in the third.
    write_requests(tmp_path / "in.jsonl", 40, emulator_error_rate=0.15)

    manifest = job_op(tmp_path, max_requests_per_batch=20, max_resubmits=3).execute(context())

    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(40)]
    assert manifest["error"] is None and manifest["totals"]["completed"] == 40
    rounds = [r["requests"] for r in manifest["rounds"]]
    assert rounds == [40, 6, 1] and manifest["resubmitted"] == 7
    assert requests_sent(openai_conn) == sum(rounds)
    assert all(s["round"] > 0 for s in manifest["shards"][2:])
    later = [s for s in manifest["shards"] if s["round"] == 1]
    assert all(1 <= s["first_line"] <= s["last_line"] <= 40 for s in later)  # the input's own line numbers


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_tenth_expiring_and_a_fiftieth_answering_500_all_end_answered(
    openai_conn: EmulatorServer, tmp_path: Path, deferrable: bool
) -> None:
    # The first target. Every batch (follow-ups too) leaves the last 10 % of its requests unfinished
    # (rounded down: a round of fewer than 10 lines runs whole); 2 % of lines answer 500, drawn again each time.
    n = 400
    write_requests(tmp_path / "in.jsonl", n, emulator_error_rate=0.02)

    def op() -> Any:
        return job_op(
            tmp_path,
            max_requests_per_batch=100,
            max_resubmits=2,
            metadata={"emulator": "expire=10"},
            deferrable=deferrable,
        )

    manifest = run_deferred(op, FakeTI())[0] if deferrable else op().execute(context())

    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(n)]  # all answered, in input order
    assert manifest["error"] is None and manifest["totals"]["completed"] == n and not manifest["errors_by_code"]
    # Deterministic figures: 4 shards of 100 expire 40 lines and 10 answer 500; the follow-up of 50 expires 5.
    rounds = [r["requests"] for r in manifest["rounds"]]
    assert rounds == [n, 50, 5] and manifest["resubmitted"] == 55
    batches = list(openai_conn.batches.values())
    assert requests_sent(openai_conn) == sum(rounds) <= n + rounds[1] * 2  # N + retryable failures x rounds
    failed = sorted(b["request_counts"]["failed"] for b in batches)
    assert sum(failed) == manifest["resubmitted"]  # every failure was retryable and resubmitted once
    # Each shard of 100: 10 expired + its 500s (10 in all); the follow-up of 50: 5 expired; the last, of 5: none.
    assert failed == [0, 5, 11, 12, 12, 15]


@pytest.mark.parametrize(("max_failed", "passes"), [(0.01, True), (2, False)])
def test_a_hundredth_invalid_is_never_resubmitted_and_counted_by_the_verdict(
    openai_conn: EmulatorServer, tmp_path: Path, max_failed: float, passes: bool
) -> None:
    # The second target: 1 % of lines are invalid_request_error (every 100th), among lines of which 5 %
    # answer 500 and are resubmitted. The invalid ones stay in the error file, reported by code and count.
    n, invalid = 300, {f"req-{i}" for i in range(0, 300, 100)}
    lines = [chat_line(i, fail=f"req-{i}" in invalid) for i in range(n)]
    for line in lines:
        line["body"]["emulator_error_rate"] = 0.05
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ti = FakeTI()
    op = job_op(tmp_path, max_requests_per_batch=100, max_resubmits=2, max_failed_requests=max_failed)

    if passes:
        manifest = op.execute(context(ti))
    else:
        with pytest.raises(AirflowFailException, match="more failed requests than max_failed_requests=2"):
            op.execute(context(ti))
        manifest = ti.xcoms[XCOM_MANIFEST]

    assert manifest["errors_by_code"] == {"emulator_forced_failure": 3}
    assert set(ids_of(manifest["error"]["path"])) == invalid
    rounds = [r["requests"] for r in manifest["rounds"]]
    assert rounds == [300, 8]  # deterministic: the 8 lines that answered 500 were sent again...
    sent_again = [b for b in openai_conn.batches.values() if b["request_counts"]["total"] < 100]
    for batch in sent_again:  # ...and no invalid line with them
        content = openai_conn.store.files[batch["input_file_id"]].path.read_text()
        assert not any(f'"{cid}"' in content for cid in invalid)
    assert requests_sent(openai_conn) == sum(rounds)
    assert manifest["totals"]["completed"] == n - 3
    assert manifest["verdict"] == ("succeed" if passes else "fail")


def test_lines_at_fault_are_not_resubmitted(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    lines = [chat_line(i, fail=i % 4 == 0) for i in range(12)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    manifest = job_op(tmp_path, max_resubmits=2, max_failed_requests=3).execute(context())

    assert len(openai_conn.batches) == 1  # nothing was sent again
    assert manifest["rounds"] == [{"round": 0, "requests": 12}] and manifest["resubmitted"] == 0
    assert manifest["errors_by_code"] == {"emulator_forced_failure": 3}
    assert ids_of(manifest["error"]["path"]) == ["req-0", "req-4", "req-8"]


def test_expired_lines_run_again_at_most_max_resubmits_times(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 8)
    ti = FakeTI()
    op = job_op(tmp_path, max_requests_per_batch=4, max_resubmits=2, metadata={"emulator": "expire"})

    with pytest.raises(AirflowFailException, match="ended before finishing"):
        op.execute(context(ti))

    manifest = ti.xcoms["manifest"]
    # Every round expires half of what it runs: 8, then 4, then 2; one line is left unanswered.
    assert [r["requests"] for r in manifest["rounds"]] == [8, 4, 2]
    assert requests_sent(openai_conn) == 14 <= 8 + 4 * 2
    assert manifest["totals"]["completed"] == 7 and manifest["errors_by_code"] == {"batch_expired": 1}
    answered = ids_of(manifest["output"]["path"])
    assert answered == sorted(answered, key=lambda c: int(c.split("-")[1])) and len(answered) == 7


def test_a_clear_mid_resubmission_reuses_every_batch(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "in.jsonl", 30, emulator_error_rate=0.3)
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as first:
        job_op(tmp_path, max_requests_per_batch=10, max_resubmits=2, deferrable=True).execute(context(ti))
    (event,) = run_trigger(first.value.trigger)  # type: ignore[arg-type]
    with pytest.raises(TaskDeferred):  # the resubmission round is created, then the task waits again
        job_op(tmp_path, max_requests_per_batch=10, max_resubmits=2, deferrable=True).execute_complete(
            context(ti), event
        )
    before = set(openai_conn.batches)

    ti.try_number = 2
    # A clear: the task runs from the start; every batch of both rounds exists and is reused.
    manifest = job_op(tmp_path, max_requests_per_batch=10, max_resubmits=2).execute(context(ti))

    created_by_clear = set(openai_conn.batches) - before
    assert all(s["reused"] for s in manifest["shards"] if s["batch_id"] in before)
    tags = [b["metadata"]["airflow_idempotency_key"] for b in openai_conn.batches.values()]
    assert len(tags) == len(set(tags)), "a batch was created twice"
    assert not any(s["round"] <= 1 and s["batch_id"] in created_by_clear for s in manifest["shards"])
    answered = ids_of(manifest["output"]["path"])
    assert answered == [f"req-{i}" for i in range(30) if f"req-{i}" in set(answered)]


def test_max_resubmits_must_be_a_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_resubmits"):
        job_op(tmp_path, max_resubmits=-1)
    assert ENDPOINT
