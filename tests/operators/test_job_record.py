"""The job's record: a retry or a clear reads what every earlier batch answered and sends only the rest.

Each case runs against the emulator and counts, from the emulator's own batches, how many times each line was
answered: a line answered twice was billed twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests._kit.airflow_compat import AirflowException
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op, write_requests
from tests._kit.ti import FakeTI, context

IDS = [f"req-{i}" for i in range(12)]


def answered_counts(emulator: EmulatorServer) -> Counter[str]:
    """How many times the emulator answered (2xx) each custom_id, over every batch it ran."""
    import json

    counts: Counter[str] = Counter()
    for batch in emulator.batches.values():
        file_id = batch.get("output_file_id")
        if not file_id or file_id not in emulator.files:
            continue
        for raw in emulator.file_content(str(file_id)).splitlines():
            line = json.loads(raw)
            if 200 <= int(line["response"]["status_code"]) < 300:
                counts[line["custom_id"]] += 1
    return counts


def test_a_clear_after_an_output_file_is_gone_sends_only_that_shards_lines(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    write_requests(tmp_path / "in.jsonl", 12)
    ti = FakeTI()
    first = job_op(tmp_path, max_requests_per_batch=4).execute(context(ti))
    gone = first["shards"][1]["output_file_id"]
    OpenAIBatchHook("openai_default").delete_file(gone)  # expired or deleted on the service
    answered_before = answered_counts(openai_conn)  # its 4 answers are lost with it

    ti.try_number = 2  # the clear: no 404, the lost lines run again, nothing else does
    again = job_op(tmp_path, max_requests_per_batch=4).execute(context(ti))

    assert ids_of(again["output"]["path"]) == IDS
    created = [s for s in again["shards"] if not s["reused"]]
    assert [s["requests"] for s in created] == [4] and (created[0]["first_line"], created[0]["last_line"]) == (5, 8)
    sent_again = answered_counts(openai_conn) - answered_before
    assert sorted(sent_again) == [f"req-{i}" for i in range(4, 8)] and set(sent_again.values()) == {1}


def test_a_clear_runs_the_lines_that_failed_for_a_passing_reason_and_never_an_answered_one(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    # 30 % of lines answer 500 (drawn per line and input file); max_resubmits=0 leaves them failed in the first try.
    write_requests(tmp_path / "in.jsonl", 12, emulator_error_rate=0.3)
    ti = FakeTI()
    first = job_op(tmp_path, max_requests_per_batch=4).execute(context(ti))
    failed = first["totals"]["failed"]
    assert 0 < failed < 12

    ti.try_number = 2
    again = job_op(tmp_path, max_requests_per_batch=4).execute(context(ti))

    resent = sum(s["requests"] for s in again["shards"] if not s["reused"])
    assert resent == failed  # only the failed lines, in shards of this try's limits
    assert max(answered_counts(openai_conn).values()) == 1  # no line answered (billed) twice
    assert again["totals"]["completed"] >= first["totals"]["completed"]


def test_capacity_failures_back_off_and_resubmit_without_enqueued_limits(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The organization's queue holds 4 requests; 3 shards of 4 submitted at once: two fail token/request limits.
    monkeypatch.setattr(openai_conn.store, "enqueued_request_limit", 4)
    write_requests(tmp_path / "in.jsonl", 12)

    manifest = job_op(tmp_path, max_requests_per_batch=4).execute(context())

    assert ids_of(manifest["output"]["path"]) == IDS and manifest["verdict"] == "succeed"
    failed = [b for b in openai_conn.batches.values() if b["status"] == "failed"]
    assert manifest["capacity"]["capacity_retries"] == len(failed) >= 1
    assert failed and all(b["errors"]["data"][0]["code"] == "request_limit_exceeded" for b in failed)
    assert max(answered_counts(openai_conn).values()) == 1


def test_capacity_failures_past_the_retries_fail_the_task_with_retry(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_conn.store, "enqueued_request_limit", 2)  # a shard of 4 never fits
    monkeypatch.setattr("airflow_provider_openai_batch.job.admission.MAX_CAPACITY_RETRIES", 1)
    write_requests(tmp_path / "in.jsonl", 4)

    with pytest.raises(AirflowException, match="failed for capacity") as info:
        job_op(tmp_path, max_requests_per_batch=4).execute(context())

    assert type(info.value).__name__ == "AirflowException"  # retried by Airflow, not AirflowFailException
