"""outcome.py: the verdict on every status, the failed-requests policy, the progress line."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from airflow_provider_openai_batch.models import Batch, BatchErrors, BatchStatus, RequestCounts
from airflow_provider_openai_batch.outcome import (
    FailedRequestsPolicy,
    Verdict,
    describe_progress,
    judge_batch,
)

RUNNING = [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING]
COUNTS = {
    "all_ok": RequestCounts(total=4, completed=4, failed=0),
    "some_failed": RequestCounts(total=4, completed=3, failed=1),
    "all_failed": RequestCounts(total=4, completed=0, failed=4),
    "none_done": RequestCounts(total=4, completed=0, failed=0),
    "empty": RequestCounts(),
}


def make_batch(status: BatchStatus, counts: RequestCounts, **kwargs: Any) -> Batch:
    if counts.completed and "output_file_id" not in kwargs:
        kwargs["output_file_id"] = "file-out"
    if (counts.failed or counts.total > counts.completed) and "error_file_id" not in kwargs:
        kwargs["error_file_id"] = "file-err"
    return Batch(id="batch_1", status=status, request_counts=counts, created_at=1_700_000_000, **kwargs)


def expected(status: BatchStatus, counts_name: str, allow_partial: bool) -> tuple[Verdict, str]:
    """The documented rules, written out independently of the implementation."""
    if status in RUNNING:
        return Verdict.WAIT, "running"
    if status is BatchStatus.FAILED:
        return Verdict.FAIL, "failed"
    counts = COUNTS[counts_name]
    if status in (BatchStatus.EXPIRED, BatchStatus.CANCELLED):
        if not allow_partial:
            return Verdict.FAIL, status.value
        return (Verdict.SUCCEED, "partial") if counts.completed else (Verdict.FAIL, "no_output")
    if counts.total and counts.failed == counts.total:
        return Verdict.FAIL, "all_requests_failed"
    return Verdict.SUCCEED, "completed"


@pytest.mark.parametrize("allow_partial", [False, True])
@pytest.mark.parametrize("counts_name", list(COUNTS))
@pytest.mark.parametrize("status", list(BatchStatus))
def test_judge_every_status(status: BatchStatus, counts_name: str, allow_partial: bool) -> None:
    batch = make_batch(status, COUNTS[counts_name])

    outcome = judge_batch(batch, allow_partial=allow_partial)

    assert (outcome.verdict, outcome.reason) == expected(status, counts_name, allow_partial)
    assert outcome.batch is batch
    assert outcome.output_file_id == batch.output_file_id
    assert batch.id in outcome.message


def test_every_status_is_covered() -> None:
    assert {s.value for s in BatchStatus} == {
        "validating",
        "in_progress",
        "finalizing",
        "cancelling",
        "completed",
        "failed",
        "expired",
        "cancelled",
    }
    assert not BatchStatus.CANCELLING.is_terminal


def test_failed_message_lists_the_errors() -> None:
    errors = BatchErrors.from_dict(
        {"data": [{"code": "url_mismatch", "message": "The URL does not match", "param": "url", "line": 7}]}
    )
    outcome = judge_batch(make_batch(BatchStatus.FAILED, RequestCounts(), errors=errors))
    assert "line 7" in outcome.message and "url_mismatch" in outcome.message
    assert "The URL does not match" in outcome.message


def test_failed_without_errors_says_so() -> None:
    outcome = judge_batch(make_batch(BatchStatus.FAILED, RequestCounts()))
    assert "gave no details" in outcome.message


@pytest.mark.parametrize("status", [BatchStatus.EXPIRED, BatchStatus.CANCELLED])
def test_partial_message_has_counts_and_files(status: BatchStatus) -> None:
    outcome = judge_batch(make_batch(status, COUNTS["some_failed"]))
    assert "3 completed, 1 failed of 4" in outcome.message
    assert "file-out" in outcome.message and "file-err" in outcome.message
    assert "allow_partial=True" in outcome.message


def test_partial_without_output_file_fails_even_if_counts_say_completed() -> None:
    batch = make_batch(BatchStatus.EXPIRED, COUNTS["some_failed"], output_file_id=None)
    assert judge_batch(batch, allow_partial=True).reason == "no_output"


@pytest.mark.parametrize(
    ("limit", "counts", "verdict"),
    [
        (None, RequestCounts(100, 1, 99), Verdict.SUCCEED),
        (0, RequestCounts(4, 4, 0), Verdict.SUCCEED),
        (0, RequestCounts(4, 3, 1), Verdict.FAIL),
        (1, RequestCounts(4, 3, 1), Verdict.SUCCEED),
        (1, RequestCounts(4, 2, 2), Verdict.FAIL),
        (0.25, RequestCounts(4, 3, 1), Verdict.SUCCEED),
        (0.2, RequestCounts(4, 3, 1), Verdict.FAIL),
        (0.0, RequestCounts(4, 4, 0), Verdict.SUCCEED),
        (0.0, RequestCounts(4, 3, 1), Verdict.FAIL),
        (0.99, RequestCounts(4, 0, 4), Verdict.FAIL),  # all failed: never accepted
        (1000, RequestCounts(4, 0, 4), Verdict.FAIL),
    ],
)
def test_max_failed_requests(limit: int | float | None, counts: RequestCounts, verdict: Verdict) -> None:
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, counts), max_failed_requests=limit)
    assert outcome.verdict is verdict
    if verdict is Verdict.FAIL and counts.failed < counts.total:
        assert outcome.reason == "too_many_failed_requests"
        assert f"{counts.failed} failed requests of {counts.total}" in outcome.message


def test_completed_with_failures_names_the_error_file() -> None:
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, COUNTS["some_failed"]))
    assert outcome.verdict is Verdict.SUCCEED
    assert "file-err" in outcome.message


@pytest.mark.parametrize("limit", [-1, 1.0, 1.5, -0.01, True, False, "2", [1]])
def test_policy_rejects_bad_limits(limit: Any) -> None:
    with pytest.raises(ValueError, match="max_failed_requests"):
        FailedRequestsPolicy(limit)


@pytest.mark.parametrize(("limit", "text"), [(None, "any number"), (3, "3"), (0.05, "5.0%")])
def test_policy_describe(limit: int | float | None, text: str) -> None:
    assert FailedRequestsPolicy(limit).describe() == text


def test_policy_ratio_with_no_total_is_not_exceeded() -> None:
    assert not FailedRequestsPolicy(0.0).exceeded_by(failed=1, total=0)
    assert not FailedRequestsPolicy(0).exceeded_by(failed=0, total=10)


def test_describe_progress() -> None:
    batch = Batch(
        id="batch_9",
        status=BatchStatus.IN_PROGRESS,
        request_counts=RequestCounts(total=200, completed=50, failed=3),
        created_at=1_000,
    )
    line = describe_progress(batch, now=1_000 + 2 * 3600 + 5 * 60 + 7)
    assert line == "Batch batch_9: in_progress, 50 completed / 3 failed / 200 total (26.5%), elapsed 2h05m07s"


def test_describe_progress_without_total_or_start() -> None:
    batch = Batch(id="batch_9", status=BatchStatus.VALIDATING)
    assert describe_progress(batch) == "Batch batch_9: validating, 0 completed / 0 failed / 0 total (0.0%)"


# -- Boundaries: one-request batches, zero completed, exact limits -------------------------------------------


def test_one_request_batch_whose_request_failed_fails() -> None:
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, RequestCounts(total=1, completed=0, failed=1)))
    assert (outcome.verdict, outcome.reason) == (Verdict.FAIL, "all_requests_failed")


def test_one_request_batch_whose_request_succeeded_succeeds() -> None:
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, RequestCounts(total=1, completed=1, failed=0)))
    assert (outcome.verdict, outcome.reason) == (Verdict.SUCCEED, "completed")


def test_more_failed_than_total_still_counts_as_every_request_failed() -> None:
    # The API's counters are not transactional: a failed count past the total must not read as a success.
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, RequestCounts(total=2, completed=0, failed=3)))
    assert outcome.reason == "all_requests_failed"


@pytest.mark.parametrize("status", [BatchStatus.EXPIRED, BatchStatus.CANCELLED])
def test_partial_with_output_file_but_zero_completed_is_not_accepted(status: BatchStatus) -> None:
    batch = make_batch(status, RequestCounts(total=4, completed=0, failed=2), output_file_id="file-out")
    outcome = judge_batch(batch, allow_partial=True)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAIL, "no_output")


@pytest.mark.parametrize("status", [BatchStatus.EXPIRED, BatchStatus.CANCELLED])
def test_partial_with_one_completed_request_is_accepted(status: BatchStatus) -> None:
    outcome = judge_batch(make_batch(status, RequestCounts(total=4, completed=1, failed=0)), allow_partial=True)
    assert (outcome.verdict, outcome.reason) == (Verdict.SUCCEED, "partial")


@pytest.mark.parametrize(
    ("status", "words"), [(BatchStatus.EXPIRED, "expired before finishing"), (BatchStatus.CANCELLED, "was cancelled")]
)
def test_partial_messages_say_what_happened(status: BatchStatus, words: str) -> None:
    counts = COUNTS["some_failed"]
    for allow_partial in (False, True):
        message = judge_batch(make_batch(status, counts), allow_partial=allow_partial).message
        assert words in message
        assert ("expired" in message) is (status is BatchStatus.EXPIRED)


def test_completed_message_without_failures_is_exact() -> None:
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, COUNTS["all_ok"]))
    assert outcome.message == "Batch batch_1 completed: 4 completed, 0 failed of 4."


@pytest.mark.parametrize(
    ("limit", "failed", "total", "exceeded"),
    [
        (3, 3, 10, False),  # exactly the limit is accepted
        (3, 4, 10, True),
        (3, 1, 10, False),  # under the limit
        (0.5, 5, 10, False),  # exactly the share
        (0.5, 6, 10, True),
        (0.5, 1, 10, False),  # well under the share
        (0.0, 1, 1, True),  # one request, one failure, no failure allowed
    ],
)
def test_policy_exact_limits(limit: int | float, failed: int, total: int, exceeded: bool) -> None:
    assert FailedRequestsPolicy(limit).exceeded_by(failed=failed, total=total) is exceeded


@pytest.mark.parametrize(
    ("verdict", "value"), [(Verdict.WAIT, "wait"), (Verdict.SUCCEED, "succeed"), (Verdict.FAIL, "fail")]
)
def test_verdict_values_are_stable(verdict: Verdict, value: str) -> None:
    # The values travel in trigger events and logs: renaming one breaks a running deployment.
    assert Verdict(value) is verdict
    assert verdict == value


def test_outcomes_and_policies_are_immutable() -> None:
    outcome = judge_batch(make_batch(BatchStatus.COMPLETED, COUNTS["all_ok"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.reason = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FailedRequestsPolicy(1).limit = 2  # type: ignore[misc]


def test_describe_progress_never_shows_negative_elapsed_time() -> None:
    # created_at ahead of the local clock (skew): the elapsed time is shown as zero, not negative.
    batch = Batch(id="batch_9", status=BatchStatus.IN_PROGRESS, created_at=10_000)
    assert describe_progress(batch, now=9_000).endswith(", elapsed 0h00m00s")


@pytest.mark.parametrize(
    ("seconds", "text"), [(59, "0h00m59s"), (60, "0h01m00s"), (3599, "0h59m59s"), (3600, "1h00m00s")]
)
def test_describe_progress_elapsed_boundaries(seconds: int, text: str) -> None:
    batch = Batch(id="batch_9", status=BatchStatus.IN_PROGRESS, created_at=1_000)
    assert describe_progress(batch, now=1_000 + seconds).endswith(f", elapsed {text}")


@pytest.mark.parametrize(
    ("codes", "capacity"),
    [
        (["token_limit_exceeded"], True),
        (["request_limit_exceeded"], True),
        (["token_limit_exceeded", "token_limit_exceeded"], True),
        (["token_limit_exceeded", "request_limit_exceeded"], True),  # every capacity code at once
        (["token_limit_exceeded", "invalid_json_line"], False),  # the input is wrong too: fixing it comes first
        (["invalid_json_line"], False),
        (["model_not_found"], False),
        ([None], False),
        ([], False),
    ],
)
def test_failed_batches_are_capacity_or_input_failures(codes: list[str | None], capacity: bool) -> None:
    errors = BatchErrors.from_dict({"data": [{"code": code, "message": "m"} for code in codes]})
    outcome = judge_batch(make_batch(BatchStatus.FAILED, COUNTS["empty"], errors=errors))
    assert outcome.verdict is Verdict.FAIL
    assert (outcome.reason, outcome.retryable) == (("capacity", True) if capacity else ("failed", False))
    assert ("Fix the input file" in outcome.message) is not capacity
