"""The job's deadline, pure: parsing and resolving it, what is due once it passed, when a waiting job wakes,
which lines it left unrun, and the verdict on a job cut by it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_openai_batch.job.deadline import (
    deadline_anchor,
    deadline_step,
    job_wake_at,
    mark_hit,
    overdue,
    parse_deadline,
    past_deadline,
    resolve_deadline,
)
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.merge import Overdue, ResultFile, merge_results
from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan, ShardInfo
from airflow_provider_openai_batch.job.split import split_input
from airflow_provider_openai_batch.job.verdict import judge_plan
from airflow_provider_openai_batch.models import Batch
from tests._kit.job_lines import ids_of, request, write_lines

UTC = timezone.utc
AT = 1_000_000.0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("None", None),  # an optional template that rendered nothing
        (90, 90.0),
        (1.5, 1.5),
        ("3600", 3600.0),
        (timedelta(hours=2), 7200.0),
        ("PT2H30M", 9000.0),
        ("P1DT1S", 86401.0),
        ("pt90m", 5400.0),
        ("P1W", 604800.0),
        ("PT0.5S", 0.5),
        (str(timedelta(hours=6)), 21600.0),  # "{{ macros.timedelta(hours=6) }}" as rendered
        (str(timedelta(days=2, seconds=1.5)), 172801.5),
        (datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01 02:00:00+02:00", datetime(2030, 1, 1, tzinfo=UTC)),
    ],
)
def test_deadlines_parse(given: Any, expected: Any) -> None:
    assert parse_deadline(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (0, "positive"),
        (-3, "positive"),
        ("nan", "positive"),
        ("inf", "positive"),
        (timedelta(seconds=-1), "positive"),
        ("PT0S", "positive"),
        (True, "datetime, a duration or seconds"),
        ([60], "list"),
        ("P1M", "years and months"),
        ("P1Y2D", "years and months"),
        ("P", "not an ISO-8601 duration"),
        ("P1DT", "not an ISO-8601 duration"),
        ("0:00:00", "positive"),
        ("2:0:00", "neither a date-time"),
        ("PT1H5", "not an ISO-8601 duration"),
        ("2030-01-01T00:00:00", "no time zone"),
        (datetime(2030, 1, 1), "no time zone"),
        ("next tuesday", "neither a date-time"),
    ],
)
def test_bad_deadlines_are_named(given: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_deadline(given)


def test_a_duration_counts_from_the_dag_runs_start_and_a_moment_stands_alone() -> None:
    start = datetime(2030, 1, 1, 6, tzinfo=UTC)
    anchor = deadline_anchor({"dag_run": SimpleNamespace(start_date=start)}, now=AT)
    assert anchor == start.timestamp()
    assert deadline_anchor({"dag_run": SimpleNamespace(start_date=start.replace(tzinfo=None))}) == anchor  # UTC
    assert deadline_anchor({}, now=AT) == AT  # no run in the context: the task's own start
    assert resolve_deadline("PT2H", anchor=anchor) == anchor + 7200
    assert resolve_deadline(start + timedelta(hours=1), anchor=0.0) == anchor + 3600
    assert resolve_deadline(None, anchor=anchor) is None


def shard(index: int, first: int, last: int, batch_id: str | None, **kwargs: Any) -> ShardInfo:
    return ShardInfo(index, "m", first, last, last - first + 1, 100, 0, batch_id=batch_id, **kwargs)


def plan(*shards: ShardInfo, deadline: JobDeadline | None = None) -> JobPlan:
    requests = sum(s.requests for s in shards if s.round == 0)
    return JobPlan(
        "in.jsonl",
        "0" * 64,
        requests,
        1,
        "/v1/chat/completions",
        ShardLimits(10, 10**6, 10),
        True,
        shards,
        deadline=deadline,
    )


def batch(batch_id: str, status: str, completed: int = 0, total: int = 10) -> Batch:
    return Batch.from_dict(
        {
            "id": batch_id,
            "status": status,
            "endpoint": "/v1/chat/completions",
            "request_counts": {"total": total, "completed": completed, "failed": total - completed},
        }
    )


def test_nothing_is_due_before_the_deadline_or_when_nothing_is_left() -> None:
    job = plan(shard(0, 1, 10, "a"), deadline=JobDeadline(AT, "partial"))
    running = {"a": batch("a", "in_progress")}
    assert deadline_step(job, running, now=AT - 1) is None
    assert deadline_step(job, {"a": batch("a", "completed", 10)}, now=AT + 1) is None
    assert deadline_step(plan(shard(0, 1, 10, "a")), running, now=AT + 1) is None  # no deadline


def test_at_the_deadline_only_the_jobs_running_batches_are_cancelled_once() -> None:
    job = plan(
        shard(0, 1, 10, "a"),
        shard(1, 11, 20, "b"),
        shard(2, 21, 30, "c"),
        shard(3, 31, 40, None),
        deadline=JobDeadline(AT, "partial"),
    )
    batches = {"a": batch("a", "in_progress"), "b": batch("b", "completed", 10), "c": batch("c", "cancelling")}
    step = deadline_step(job, batches, now=AT)
    assert step is not None
    assert step.cancel == ("a",) and step.running == ("a", "c") and step.not_submitted == 1

    hit = mark_hit(job, now=AT + 1, cancelled=("a",))
    assert hit.deadline == JobDeadline(AT, "partial", hit_at=AT + 1, cancelled=("a",), tried_at=AT + 1)
    again = deadline_step(hit, {**batches, "a": batch("a", "cancelling")}, now=AT + 2)
    assert again is not None and again.cancel == () and again.running == ("a", "c")
    again_hit = mark_hit(hit, now=AT + 5, cancelled=("a",)).deadline
    assert again_hit == replace(hit.deadline, tried_at=AT + 5)  # first hit kept, no twin; the last round noted
    assert JobPlan.from_dict(json.loads(json.dumps(hit.to_dict()))) == hit  # carried across the deferral


def test_a_waiting_job_wakes_at_the_deadline_or_a_back_off_whichever_comes_first() -> None:
    waiting = shard(1, 11, 20, None, not_before=AT + 30)
    assert job_wake_at(plan(shard(0, 1, 10, "a"), waiting), now=AT) == AT + 30
    assert job_wake_at(plan(waiting, deadline=JobDeadline(AT + 10, "fail")), now=AT) == AT + 10
    assert job_wake_at(plan(waiting, deadline=JobDeadline(AT + 60, "fail")), now=AT) == AT + 30
    assert job_wake_at(plan(waiting, deadline=JobDeadline(AT + 10, "fail", hit_at=AT)), now=AT) == AT + 30
    assert job_wake_at(plan(waiting), now=AT + 31) is None  # a back-off over waits for capacity, not a timer
    assert job_wake_at(plan(shard(0, 1, 10, "a")), now=AT) is None


def test_a_cancel_that_failed_at_the_deadline_is_tried_again_one_interval_later() -> None:
    hit = plan(
        shard(0, 1, 10, "a"), shard(1, 11, 20, "b"), deadline=JobDeadline(AT, "partial", hit_at=AT, cancelled=("a",))
    )
    cancelling = {"a": batch("a", "cancelling")}
    assert job_wake_at(hit, now=AT + 1, batches={**cancelling, "b": batch("b", "in_progress")}, retry_after=5) == AT + 6
    assert job_wake_at(hit, now=AT + 1, batches={**cancelling, "b": batch("b", "cancelling")}, retry_after=5) is None


def test_no_resubmission_round_past_the_deadline() -> None:
    assert not past_deadline(plan(deadline=JobDeadline(AT, "partial")), now=AT - 1)
    assert past_deadline(plan(deadline=JobDeadline(AT, "partial")), now=AT)
    assert past_deadline(plan(deadline=JobDeadline(AT + 99, "partial", hit_at=AT)), now=AT)
    assert not past_deadline(plan(), now=AT)


def test_overdue_lines_are_those_of_cancelled_or_unsubmitted_shards() -> None:
    job = plan(shard(0, 1, 10, "a"), shard(1, 11, 20, "b"), shard(2, 21, 30, None))
    assert overdue(job) is None  # no deadline
    hit = plan(*job.shards, deadline=JobDeadline(AT, "partial", hit_at=AT, cancelled=("a",)))
    lines = overdue(hit)
    assert lines is not None
    assert [n for n in range(0, 32) if lines.covers(n)] == [*range(1, 11), *range(21, 31)]
    assert "deadline 1970-01-12T13:46:40+00:00" in json.loads(lines.line("x"))["error"]["message"]
    assert Overdue([(5, 9), (1, 4), (20, 20)], "m").covers(4) and not Overdue([(5, 9)], "m").covers(10)


def test_the_merge_writes_unrun_lines_as_deadline_exceeded(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(6)])
    with source.open("rb") as handle:
        split = split_input(
            handle, tmp_path, endpoint="/v1/chat/completions", limits=ShardLimits(3, 10**6, 10), source="in.jsonl"
        )
    answered = [{"custom_id": "req-0", "response": {"status_code": 200, "body": {}}, "error": None}]
    cut = [
        {"custom_id": f"req-{i}", "response": None, "error": {"code": "batch_cancelled", "message": "c"}}
        for i in (1, 2)
    ]
    out_file = write_lines(tmp_path / "out.jsonl", answered)
    err_file = write_lines(tmp_path / "err.jsonl", cut)
    user_cancelled = write_lines(tmp_path / "other.jsonl", [{**cut[0], "custom_id": "req-3"}])
    results = [
        ResultFile(err_file, ok=False, overdue=True),
        ResultFile(user_cancelled, ok=False),
        ResultFile(out_file, ok=True),
    ]
    with source.open("rb") as stream, (tmp_path / "o").open("wb") as out, (tmp_path / "e").open("wb") as err:
        stats = merge_results(
            stream,
            results,
            out,
            err,
            plan=split.plan,
            workdir=tmp_path,
            overdue=Overdue([(1, 3)], "cut at the deadline"),
        )

    assert ids_of(tmp_path / "o") == ["req-0"]
    errors = [json.loads(line) for line in (tmp_path / "e").read_text().splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("req-1", "deadline_exceeded"),
        ("req-2", "deadline_exceeded"),
        ("req-3", "batch_cancelled"),  # its batch was not cancelled by the deadline
        ("req-4", "missing_result"),  # outside the deadline's shards
        ("req-5", "missing_result"),
    ]
    assert stats.error_codes == {"deadline_exceeded": 2, "batch_cancelled": 1, "missing_result": 2}
    assert stats.retryable == 2  # only the missing ones: the job decision starts no round past the deadline


def test_the_verdict_accepts_what_the_deadline_cut_only_with_on_deadline_partial() -> None:
    shards = (shard(0, 1, 10, "a"), shard(1, 11, 20, "b"))
    batches = {"a": batch("a", "cancelled", 6), "b": batch("b", "completed", 10)}
    partial = plan(*shards, deadline=JobDeadline(AT, "partial", hit_at=AT, cancelled=("a",)))
    policy: dict[str, Any] = {"allow_partial": False, "max_failed_requests": None}

    outcome = judge_plan(partial, batches, answered=16, unfinished=4, **policy)
    assert (outcome.verdict.value, outcome.reason) == ("succeed", "deadline")
    assert "16 answered, 4 failed or unanswered of 20" in outcome.message
    assert judge_plan(
        partial, batches, answered=16, unfinished=4, allow_partial=False, max_failed_requests=3
    ).reason == ("too_many_failed_requests")
    # A batch the user cancelled (not the deadline) still needs allow_partial.
    user = plan(*shards, deadline=JobDeadline(AT, "partial", hit_at=AT, cancelled=()))
    assert judge_plan(user, batches, answered=16, unfinished=4, **policy).reason == "cancelled"
    assert judge_plan(plan(*shards), batches, answered=16, unfinished=4, **policy).reason == "cancelled"
