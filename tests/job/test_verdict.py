"""judge_job: the sensor's verdict over a whole job; the manifest that summarises it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.manifest import build_manifest
from airflow_provider_openai_batch.job.merge import MergeStats
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.job.verdict import describe_job_progress, judge_job, judge_plan
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.outcome import Verdict, judge_batch


def batch(i: int, status: str, completed: int = 10, failed: int = 0, total: int = 10, **extra: Any) -> Batch:
    counts = {"total": total, "completed": completed, "failed": failed}
    return Batch.from_dict({"id": f"batch_{i}", "status": status, "request_counts": counts, **extra})


def shard(i: int) -> ShardInfo:
    return ShardInfo(i, "m", 10 * i + 1, 10 * i + 10, 10, 1000, 0, batch_id=f"batch_{i}")


def judge(*batches: Batch, **kwargs: Any):  # type: ignore[no-untyped-def]
    return judge_job([(shard(i), b) for i, b in enumerate(batches)], requests=10 * len(batches), **kwargs)


def test_all_completed_succeeds() -> None:
    outcome = judge(batch(0, "completed"), batch(1, "completed", completed=9, failed=1))
    assert (outcome.verdict, outcome.reason) == (Verdict.SUCCEED, "completed")
    assert "19 answered, 1 failed" in outcome.message


def test_a_failed_shard_fails_the_job_at_once_naming_it_and_leaves_the_others_running() -> None:
    errors = {"object": "list", "data": [{"code": "invalid_json_line", "message": "bad", "line": 3}]}
    outcome = judge(batch(0, "in_progress"), batch(1, "failed", completed=0, total=0, errors=errors))
    assert (outcome.verdict, outcome.reason) == (Verdict.FAIL, "shard_failed")
    assert "shard 1 (batch batch_1, input lines 11-20)" in outcome.message
    assert "invalid_json_line" in outcome.message and "left running" in outcome.message


def test_running_shards_mean_wait() -> None:
    assert judge(batch(0, "completed"), batch(1, "finalizing")).verdict is Verdict.WAIT


@pytest.mark.parametrize("status", ["expired", "cancelled"])
def test_a_short_shard_needs_allow_partial(status: str) -> None:
    short = batch(1, status, completed=4, failed=6)
    outcome = judge(batch(0, "completed"), short)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAIL, status)
    assert "shard 1" in outcome.message and "allow_partial" in outcome.message
    accepted = judge(batch(0, "completed"), short, allow_partial=True)
    assert (accepted.verdict, accepted.reason) == (Verdict.SUCCEED, "partial")


def test_max_failed_requests_applies_to_the_total() -> None:
    shards = (batch(0, "completed", completed=7, failed=3), batch(1, "completed"))
    assert judge(*shards, max_failed_requests=3).verdict is Verdict.SUCCEED
    assert judge(*shards, max_failed_requests=2).reason == "too_many_failed_requests"
    assert judge(*shards, max_failed_requests=0.1).reason == "too_many_failed_requests"
    assert judge(*shards, max_failed_requests=0.2).verdict is Verdict.SUCCEED
    # The merged answer count is the truth once known.
    assert judge(*shards, answered=20).verdict is Verdict.SUCCEED


def test_no_answer_at_all_fails() -> None:
    outcome = judge(batch(0, "completed", completed=0, failed=10))
    assert outcome.reason == "all_requests_failed"


def test_progress_line() -> None:
    line = describe_job_progress([batch(0, "completed"), batch(1, "in_progress", completed=5, total=10)], 20)
    assert line == (
        "Job: 1/2 shard batches finished (1 completed, 1 in_progress); 15 completed / 0 failed of 20 requests (75.0%)"
    )


def test_manifest_is_small_json_with_every_shard() -> None:
    plan = JobPlan("in.jsonl", "ab" * 32, 20, 2000, "/v1/chat/completions", ShardLimits(), True, (shard(0), shard(1)))
    usage = {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}
    batches = {
        "batch_0": batch(0, "completed", usage=usage, output_file_id="file-o0"),
        "batch_1": batch(1, "completed", completed=8, failed=2, usage=usage),
    }
    stats = MergeStats(output_lines=18, output_bytes=900, error_lines=2, error_bytes=100, error_codes={"x": 2})

    manifest = build_manifest(
        plan,
        batches,
        output={"path": "/d/in_output.jsonl", "lines": 18, "bytes": 900},
        error={"path": "/d/in_error.jsonl", "lines": 2, "bytes": 100},
        stats=stats,
        verdict="succeed",
        reason="completed",
    )

    assert json.loads(json.dumps(manifest)) == manifest
    assert [(s["batch_id"], s["first_line"], s["last_line"], s["status"]) for s in manifest["shards"]] == [
        ("batch_0", 1, 10, "completed"),
        ("batch_1", 11, 20, "completed"),
    ]
    assert manifest["totals"]["completed"] == 18 and manifest["totals"]["failed"] == 2
    assert manifest["usage"]["total_tokens"] == 24 and manifest["errors_by_code"] == {"x": 2}
    assert JobPlan.from_dict(plan.to_dict()) == plan


def test_the_outcome_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        judge(batch(0, "completed")).reason = "partial"  # type: ignore[misc]


def test_every_failed_shard_is_named_and_the_running_ones_counted() -> None:
    errors = {"object": "list", "data": [{"code": "invalid_json_line", "message": "bad", "line": 3}]}
    shards = (
        batch(0, "failed", completed=0, total=0, errors=errors),
        batch(1, "in_progress"),
        batch(2, "completed"),
        batch(3, "failed", completed=0, total=0, errors=errors),
        batch(4, "validating"),
    )
    outcome = judge(*shards)
    first = f"shard 0 (batch batch_0, input lines 1-10): {judge_batch(shards[0]).message}"
    fourth = f"shard 3 (batch batch_3, input lines 31-40): {judge_batch(shards[3]).message}"
    assert outcome.message == (
        f"2 shard batch(es) failed:\n{first}\n{fourth} The other 2 shard batch(es) still running were left "
        "running; a retry or a clear reuses them and creates only the shards that failed."
    )
    alone = judge(shards[0], batch(1, "completed"))
    assert alone.message == "1 shard batch(es) failed:\nshard 0 (batch batch_0, input lines 1-10): " + (
        judge_batch(shards[0]).message
    )


def test_waiting_counts_the_finished_shards() -> None:
    outcome = judge(batch(0, "completed"), batch(1, "in_progress"), batch(2, "expired"))
    assert (outcome.verdict, outcome.reason, outcome.message) == (Verdict.WAIT, "running", "2/3 shard batches finished")


def test_short_shards_are_listed_and_the_first_names_the_reason() -> None:
    outcome = judge(
        batch(0, "cancelled", completed=4, failed=0), batch(1, "completed"), batch(2, "expired", completed=1)
    )
    assert (outcome.verdict, outcome.reason) == (Verdict.FAIL, "cancelled")
    assert outcome.message == (
        "2 shard batch(es) ended before finishing:\n"
        "shard 0 (batch batch_0, input lines 1-10): cancelled, 4 completed of 10\n"
        "shard 2 (batch batch_2, input lines 21-30): expired, 1 completed of 10\n"
        "Set allow_partial=True to accept partial results."
    )


@pytest.mark.parametrize(
    ("unfinished", "allow_partial", "reason"),
    [
        # Every line of the short shard ran again in a resubmission: nothing is partial any more.
        (0, False, "completed"),
        (0, True, "completed"),
        (1, False, "expired"),
        (1, True, "partial"),
        (None, False, "expired"),
        (None, True, "partial"),
    ],
)
def test_a_short_shard_whose_lines_all_ran_again_is_no_failure(
    unfinished: int | None, allow_partial: bool, reason: str
) -> None:
    outcome = judge(
        batch(0, "completed"),
        batch(1, "expired", completed=4),
        answered=14 if unfinished is None else 20 - unfinished,
        allow_partial=allow_partial,
        unfinished=unfinished,
    )
    assert outcome.reason == reason


def test_a_partial_job_without_any_answer_has_no_output() -> None:
    outcome = judge(batch(0, "expired", completed=0, failed=0), allow_partial=True)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAIL, "no_output")
    assert outcome.message == (
        "The job has no answered request: 0 answered, 10 failed or unanswered of 10 requests in 1 batch(es); "
        "see the error file."
    )


def test_progress_counts_the_batches_when_the_total_is_unknown() -> None:
    batches = [batch(0, "completed", completed=6, failed=2, total=8), batch(1, "completed", completed=1, total=4)]
    assert describe_job_progress(batches) == (
        "Job: 2/2 shard batches finished (2 completed); 7 completed / 2 failed of 12 requests (75.0%)"
    )
    assert (
        describe_job_progress([], 0)
        == "Job: 0/0 shard batches finished (); 0 completed / 0 failed of 0 requests (0.0%)"
    )


def test_a_plan_is_judged_on_the_shards_whose_batches_were_seen() -> None:
    shards = (shard(0), shard(1), ShardInfo(2, "m", 21, 30, 10, 1000, 0))  # shard 2 has no batch yet
    job = JobPlan("in", "0" * 64, 30, 3000, "/v1/chat/completions", ShardLimits(), True, shards)
    outcome = judge_plan(job, {"batch_0": batch(0, "completed")}, allow_partial=False, max_failed_requests=None)
    assert (outcome.verdict, outcome.message) == (
        Verdict.SUCCEED,
        "Job completed: 10 answered, 20 failed or unanswered of 30 requests in 1 batch(es).",
    )
