"""OpenAIBatchJobOperator against the emulator: split, submit, reuse, wait once, merge in input order, verdict, kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import BadRequestError, BatchInputError
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger
from tests._kit.airflow_compat import AirflowFailException, TaskDeferred
from tests._kit.batches import chat_line, wait_for_status, write_jsonl
from tests._kit.job_lines import ids_of
from tests._kit.operators import job_op, run_trigger
from tests._kit.ti import FakeTI, context


def test_a_multi_shard_job_merges_in_input_order(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 10, failing=2)
    ti = FakeTI()

    manifest = job_op(tmp_path, max_requests_per_batch=4).execute(context(ti))

    assert len(openai_conn.batches) == 3
    assert ti.xcoms["batch_ids"] == [s["batch_id"] for s in manifest["shards"]]
    assert ti.xcoms["manifest"] == manifest
    assert [(s["first_line"], s["last_line"], s["requests"]) for s in manifest["shards"]] == [
        (1, 4, 4),
        (5, 8, 4),
        (9, 10, 2),
    ]
    assert {s["status"] for s in manifest["shards"]} == {"completed"}
    # The emulator answers in hash order, not input order; the merge restores input order line by line.
    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(2, 10)]
    assert ids_of(manifest["error"]["path"]) == ["req-0", "req-1"]
    assert manifest["output"]["path"] == str(tmp_path / "out" / "in__run_1_output.jsonl")
    assert manifest["totals"] == {
        "requests": 10,
        "completed": 8,
        "failed": 2,
        "missing": 0,
        "unexpected": 0,
        "batches": 3,
        "batches_reused": 0,
    }
    assert manifest["usage"]["total_tokens"] > 0
    assert manifest["verdict"] == "succeed" and manifest["errors_by_code"]
    assert not list((tmp_path / "out").glob(".*part"))


def test_merged_files_of_another_task_instance_are_never_replaced(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    first = job_op(tmp_path, output_name="daily").execute(context(FakeTI(run_id="run_1")))
    assert first["output"]["path"] == str(tmp_path / "out" / "daily_output.jsonl")
    created = openai_conn.counters.batches_created

    # Another run writing the same name fails before anything is uploaded or billed, naming the file's owner.
    with pytest.raises(AirflowFailException, match=r"daily_output\.jsonl.*run_1"):
        job_op(tmp_path, output_name="daily").execute(context(FakeTI(run_id="run_2")))
    assert openai_conn.counters.batches_created == created
    # By default each run has its own names; overwrite=True takes a file over.
    other = job_op(tmp_path).execute(context(FakeTI(run_id="run_2")))
    assert other["output"]["path"] == str(tmp_path / "out" / "in__run_2_output.jsonl")
    job_op(tmp_path, output_name="daily", overwrite=True).execute(context(FakeTI(run_id="run_3")))
    with pytest.raises(ValueError, match="output_name"):
        job_op(tmp_path, output_name="../x").execute(context(FakeTI(run_id="run_4")))


def test_every_batch_of_a_job_carries_the_jobs_key_whatever_its_limits(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    # The tag starts with a key of the task instance and the input alone, so a try with other limits (or a
    # later round) finds the batches of every earlier one.
    write_jsonl(tmp_path / "in.jsonl", 6)
    ti = FakeTI()
    job_op(tmp_path, max_requests_per_batch=3).execute(context(ti))
    tags = [b["metadata"][IDEMPOTENCY_METADATA_KEY] for b in openai_conn.batches.values()]
    assert len(tags) == 2 and len(set(tags)) == 2
    assert len({tag.split(":")[0] for tag in tags}) == 1 and all(len(tag) < 512 for tag in tags)

    ti.try_number = 2  # a clear with a larger shard limit sends nothing: every line is answered
    manifest = job_op(tmp_path, max_requests_per_batch=6).execute(context(ti))
    assert openai_conn.counters.batches_created == 2
    assert [s["reused"] for s in manifest["shards"]] == [True, True]
    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(6)]


def test_clear_after_two_of_three_shards_creates_only_the_third(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 9)
    ti = FakeTI()
    openai_conn.faults.add("POST /v1/batches", "status", status=400, after=2, times=1)

    with pytest.raises(BadRequestError):
        job_op(tmp_path, max_requests_per_batch=3).execute(context(ti))
    first = dict(openai_conn.batches)
    assert len(first) == 2
    uploads = openai_conn.counters.files_uploaded

    ti.try_number = 2  # the clear
    manifest = job_op(tmp_path, max_requests_per_batch=3).execute(context(ti))

    assert len(openai_conn.batches) == 3 and openai_conn.counters.batches_created == 3
    assert openai_conn.counters.files_uploaded == uploads + 1  # only the missing shard is uploaded
    assert [s["reused"] for s in manifest["shards"]] == [True, True, False]
    assert {s["batch_id"] for s in manifest["shards"][:2]} == set(first)
    keys = [b["metadata"][IDEMPOTENCY_METADATA_KEY] for b in openai_conn.batches.values()]
    assert len(set(keys)) == 3
    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(9)]


def test_a_clear_after_many_newer_batches_still_reuses_the_shard_batches(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    # A busy project creates more batches between two tries than a fixed look-back would read (1,000): the
    # scan goes on back to when the DAG run could start, so nothing is created (and billed) twice.
    write_jsonl(tmp_path / "in.jsonl", 9)
    ti = FakeTI()
    openai_conn.faults.add("POST /v1/batches", "status", status=400, after=2, times=1)
    with pytest.raises(BadRequestError):
        job_op(tmp_path, max_requests_per_batch=3).execute(context(ti))
    first = set(openai_conn.batches)
    assert len(first) == 2
    openai_conn.seed_batches(1_100)

    ti.try_number = 2
    manifest = job_op(tmp_path, max_requests_per_batch=3).execute(context(ti))

    assert openai_conn.counters.batches_created == 3
    assert [s["reused"] for s in manifest["shards"]] == [True, True, False]
    assert {s["batch_id"] for s in manifest["shards"][:2]} == first


def test_deferrable_job_waits_once_for_every_shard(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 7)
    ti = FakeTI()
    op = job_op(tmp_path, max_requests_per_batch=3, deferrable=True)

    with pytest.raises(TaskDeferred) as info:
        op.execute(context(ti))

    deferred = info.value
    trigger = deferred.trigger
    assert isinstance(trigger, OpenAIBatchJobTrigger)
    assert trigger.batch_ids == ti.xcoms["batch_ids"] and len(trigger.batch_ids) == 3
    assert trigger.cancel_on_kill and "sk-" not in json.dumps(trigger.serialize()[1])
    (event,) = run_trigger(trigger)
    assert len(event["batches"]) == 3
    resumed = job_op(tmp_path, max_requests_per_batch=3, deferrable=True)
    manifest = resumed.execute_complete(context(ti), event)

    assert ids_of(manifest["output"]["path"]) == [f"req-{i}" for i in range(7)]
    assert manifest["totals"]["completed"] == 7


def test_bad_input_fails_before_any_upload(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    lines = [chat_line(i) for i in range(6)]
    lines[4]["custom_id"] = "req-1"
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    with pytest.raises(BatchInputError, match="line 5"):
        job_op(tmp_path, max_requests_per_batch=2).execute(context())

    assert openai_conn.counters.files_uploaded == 0 and not openai_conn.batches


def test_expired_shards_need_allow_partial(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 8)
    ti = FakeTI()

    with pytest.raises(AirflowFailException, match="allow_partial"):
        job_op(tmp_path, max_requests_per_batch=4, metadata={"emulator": "expire"}).execute(context(ti))
    failed = ti.xcoms["manifest"]
    assert failed["verdict"] == "fail" and failed["reason"] == "expired"

    manifest = job_op(
        tmp_path,
        task_id="partial",
        destination=tmp_path / "partial",  # another task instance's files are never replaced
        max_requests_per_batch=4,
        metadata={"emulator": "expire"},
        allow_partial=True,
    ).execute(context(FakeTI(task_id="partial")))

    assert manifest["reason"] == "partial"
    answered, unanswered = ids_of(manifest["output"]["path"]), ids_of(manifest["error"]["path"])
    assert len(answered) == 4 and len(unanswered) == 4
    assert sorted(answered + unanswered, key=lambda c: int(c.split("-")[1])) == [f"req-{i}" for i in range(8)]
    assert answered == sorted(answered, key=lambda c: int(c.split("-")[1]))
    assert manifest["errors_by_code"] == {"batch_expired": 4}


def test_max_failed_requests_counts_the_whole_job(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 8, failing=3)

    with pytest.raises(AirflowFailException, match="max_failed_requests=2"):
        job_op(tmp_path, max_requests_per_batch=4, max_failed_requests=2).execute(context())

    manifest = job_op(
        tmp_path, task_id="ok", destination=tmp_path / "ok", max_requests_per_batch=4, max_failed_requests=3
    ).execute(context(FakeTI(task_id="ok")))
    assert manifest["totals"]["failed"] == 3


def test_object_storage_destination(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 5, failing=1)

    manifest = job_op(
        tmp_path,
        input_file=ObjectStoragePath(f"file://{tmp_path}/in.jsonl"),
        destination=ObjectStoragePath(f"file://{tmp_path}/remote"),
        max_requests_per_batch=2,
    ).execute(context())

    assert ids_of(tmp_path / "remote" / "in__run_1_output.jsonl") == [f"req-{i}" for i in range(1, 5)]
    assert ids_of(tmp_path / "remote" / "in__run_1_error.jsonl") == ["req-0"]
    assert manifest["output"]["lines"] == 4 and manifest["error"]["bytes"] > 0


def test_kill_cancels_every_shard_batch(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 6)
    op = job_op(tmp_path, max_requests_per_batch=2, deferrable=True, metadata={"emulator": "hold"})
    with pytest.raises(TaskDeferred) as info:
        op.execute(context())

    op.on_kill()

    for batch_id in openai_conn.batches:
        wait_for_status(openai_conn, batch_id, "cancelling", "cancelled")
    assert len(openai_conn.batches) == 3
    assert isinstance(info.value.trigger, OpenAIBatchJobTrigger)


def test_limits_above_the_connections_are_refused(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 2)
    with pytest.raises(ValueError, match="over the connection's limit"):
        job_op(tmp_path, max_requests_per_batch=50_001).execute(context())
    assert openai_conn.counters.files_uploaded == 0
