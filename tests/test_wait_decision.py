"""wait_decision.py: the one poll-failure rule, over every status x every error class x budget; progress; deadline."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidConnectionError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from airflow_provider_openai_batch.models import Batch, BatchErrors, BatchStatus, RequestCounts
from airflow_provider_openai_batch.outcome import Verdict
from airflow_provider_openai_batch.wait_decision import (
    BatchWaitDecision,
    Finished,
    GiveUp,
    KeepWaiting,
    KillVerdict,
    PollErrorBudget,
    WaitPolicy,
    judge_kill,
)

#: Every status this version knows, and one it does not (the API adds statuses; gateways invent them).
STATUSES = [*BatchStatus, BatchStatus.parse("queued_at_gateway")]

#: One instance of every error a poll can raise, and whether a later poll may succeed.
ERRORS: dict[str, tuple[Exception, bool]] = {
    "400": (BadRequestError("bad", status_code=400), False),
    "401": (AuthenticationError("bad key", status_code=401), False),
    "403": (PermissionDeniedError("no", status_code=403), False),
    "404": (NotFoundError("gone", status_code=404), False),
    "409": (ConflictError("state", status_code=409), False),
    "429": (RateLimitError("slow down", status_code=429), True),
    "429-quota": (QuotaExceededError("no credit", status_code=429, code="insufficient_quota"), False),
    "503": (ServerError("unavailable", status_code=503), True),
    "connection": (APIConnectionError("refused"), True),
    "timeout": (APITimeoutError("read timeout"), True),
    "bad-body": (InvalidResponseError("not json", status_code=200), True),
    "connection-config": (InvalidConnectionError("openai_default", "no API key"), False),
    "bug": (KeyError("x"), False),
}
BUDGETS = [0, 1, 3]


def batch_in(status: BatchStatus, **kwargs: Any) -> Batch:
    kwargs.setdefault("request_counts", RequestCounts(total=2, completed=2 if status.is_success else 0))
    if status.is_success:
        kwargs.setdefault("output_file_id", "file-out")
    return Batch(id="batch_1", status=status, **kwargs)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("error_name", sorted(ERRORS))
@pytest.mark.parametrize("status", STATUSES, ids=lambda s: s.value)
def test_every_status_error_and_budget(status: BatchStatus, error_name: str, budget: int) -> None:
    error, transient = ERRORS[error_name]
    decision = BatchWaitDecision("batch_1", WaitPolicy(max_consecutive_errors=budget))

    # A run of failures: transient ones are tolerated up to the budget, the next one gives up with retry;
    # a permanent one (or a bug) gives up at once and without retry.
    for n in range(1, budget + 1):
        if not transient:
            break
        step = decision.on_error(error)
        assert isinstance(step, KeepWaiting), step
        assert step.warning is not None and f"{n}/{budget} in a row" in step.warning and str(error) in step.warning
        assert not step.log_progress and step.batch is None
    if not transient:
        step = decision.on_error(error)
        assert step == GiveUp(f"Stopped waiting for batch batch_1: {error}", retryable=False)
        return

    # A successful poll ends the run: the whole budget is available again afterwards.
    step = decision.on_batch(batch_in(status))
    if status.is_terminal:
        assert isinstance(step, Finished)
        assert step.batch.status is status
        assert step.outcome.verdict is (Verdict.SUCCEED if status.is_success else Verdict.FAIL)
        return
    assert isinstance(step, KeepWaiting) and step.log_progress and step.batch is not None
    assert (step.warning is None) is status.is_known
    for _ in range(budget):
        assert isinstance(decision.on_error(error), KeepWaiting)
    step = decision.on_error(error)
    assert isinstance(step, GiveUp) and step.retryable
    assert "too many consecutive transient failures" in step.message and str(error) in step.message


@pytest.mark.parametrize("status", [s for s in STATUSES if not s.is_terminal], ids=lambda s: s.value)
def test_progress_is_logged_when_status_or_counts_change(status: BatchStatus) -> None:
    decision = BatchWaitDecision("batch_1", WaitPolicy())
    first = decision.on_batch(batch_in(status, request_counts=RequestCounts(total=10, completed=1)))
    # Same data, other fields moving (timestamps): nothing new to log.
    same = decision.on_batch(batch_in(status, request_counts=RequestCounts(total=10, completed=1), created_at=5))
    more = decision.on_batch(batch_in(status, request_counts=RequestCounts(total=10, completed=2)))
    other = BatchStatus.FINALIZING if status is BatchStatus.CANCELLING else BatchStatus.CANCELLING
    moved = decision.on_batch(batch_in(other, request_counts=RequestCounts(total=10, completed=2)))
    assert [isinstance(s, KeepWaiting) and s.log_progress for s in (first, same, more, moved)] == [
        True,
        False,
        True,
        True,
    ]


def test_a_failure_between_two_equal_polls_does_not_relog_the_progress() -> None:
    decision = BatchWaitDecision("batch_1", WaitPolicy())
    decision.on_batch(batch_in(BatchStatus.IN_PROGRESS))
    decision.on_error(ServerError("503", status_code=503))
    step = decision.on_batch(batch_in(BatchStatus.IN_PROGRESS))
    assert isinstance(step, KeepWaiting) and not step.log_progress


def test_an_unknown_status_is_named_in_a_warning_once_per_change() -> None:
    decision = BatchWaitDecision("batch_1", WaitPolicy())
    paused = batch_in(BatchStatus.parse("Paused"))
    first, again = decision.on_batch(paused), decision.on_batch(paused)
    assert isinstance(first, KeepWaiting) and first.warning is not None
    assert "'paused'" in first.warning and "keeps waiting" in first.warning
    assert isinstance(again, KeepWaiting) and again.warning is None


def test_the_deadline_gives_up_with_retry_and_leaves_the_batch() -> None:
    decision = BatchWaitDecision("batch_1", WaitPolicy(timeout=60), started_at=1000.0)
    assert isinstance(decision.on_batch(batch_in(BatchStatus.IN_PROGRESS), now=1059.9), KeepWaiting)
    assert isinstance(decision.on_error(ServerError("503", status_code=503), now=1059.9), KeepWaiting)
    for step in (
        decision.on_batch(batch_in(BatchStatus.IN_PROGRESS), now=1060.0),
        decision.on_error(ServerError("503", status_code=503), now=1061.0),
    ):
        assert isinstance(step, GiveUp) and step.retryable
        assert "Timed out after 60s waiting for batch batch_1" in step.message and "not cancelled" in step.message
    # A batch that finished is finished, deadline or not.
    assert isinstance(decision.on_batch(batch_in(BatchStatus.COMPLETED), now=5000.0), Finished)


def test_without_a_timeout_there_is_no_deadline() -> None:
    decision = BatchWaitDecision("batch_1", WaitPolicy(timeout=None))
    assert isinstance(decision.on_batch(batch_in(BatchStatus.IN_PROGRESS), now=1e12), KeepWaiting)


def test_a_resumed_wait_keeps_its_count() -> None:
    decision = BatchWaitDecision("batch_1", WaitPolicy(max_consecutive_errors=2), consecutive_errors=2)
    assert isinstance(decision.on_error(ServerError("503", status_code=503)), GiveUp)
    assert decision.consecutive_errors == 3


def test_the_policy_judges_terminal_batches() -> None:
    completed = batch_in(BatchStatus.COMPLETED, request_counts=RequestCounts(total=4, completed=3, failed=1))
    assert WaitPolicy().judge(completed).verdict is Verdict.SUCCEED
    assert WaitPolicy(max_failed_requests=0).judge(completed).verdict is Verdict.FAIL
    cancelled = batch_in(BatchStatus.CANCELLED, request_counts=RequestCounts(total=4, completed=1), output_file_id="f")
    assert WaitPolicy().judge(cancelled).verdict is Verdict.FAIL
    assert WaitPolicy(allow_partial=True).judge(cancelled).verdict is Verdict.SUCCEED


def test_a_capacity_failure_finishes_with_a_retryable_verdict() -> None:
    failed = batch_in(
        BatchStatus.FAILED, errors=BatchErrors.from_dict({"data": [{"code": "token_limit_exceeded", "message": "m"}]})
    )
    step = BatchWaitDecision("batch_1", WaitPolicy()).on_batch(failed)
    assert isinstance(step, Finished) and step.outcome.verdict is Verdict.FAIL and step.outcome.retryable


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"poll_interval": 0}, "poll interval"),
        ({"poll_interval": float("nan")}, "poll interval"),
        ({"timeout": -1}, "timeout"),
        ({"max_consecutive_errors": -1}, "max_consecutive_errors"),
        ({"max_failed_requests": 1.5}, "max_failed_requests"),
        ({"max_failed_requests": "3"}, "max_failed_requests"),
    ],
)
def test_a_bad_policy_names_the_bad_value(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        WaitPolicy(**kwargs)


def test_the_policy_is_a_frozen_value() -> None:
    policy = WaitPolicy(poll_interval=5)
    assert policy == WaitPolicy(poll_interval=5.0)
    with pytest.raises(AttributeError):
        policy.poll_interval = 1  # type: ignore[misc]


# -- PollErrorBudget (also used as such by a waiter of many batches) -------------------------------------------


@pytest.mark.parametrize("error_name", sorted(ERRORS))
def test_budget_tolerates_exactly_the_transient_errors(error_name: str) -> None:
    error, transient = ERRORS[error_name]
    budget = PollErrorBudget(2)
    assert [budget.tolerates(error) for _ in range(3)] == ([True, True, False] if transient else [False] * 3)
    assert budget.exhausted is transient
    budget.success()
    assert budget.consecutive == 0 and not budget.exhausted


def test_budget_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        PollErrorBudget(-1)


# -- judge_kill: a trigger's on_kill, over every task state x the same, a new, an earlier or an unknown try ---------

KILLED, NOT_KILLED, UNLESS_WOKEN = KillVerdict.KILLED, KillVerdict.NOT_KILLED, KillVerdict.KILLED_UNLESS_WOKEN

#: Every state a task instance can have when its trigger's on_kill runs, and the verdict in the try it deferred in.
IN_THE_SAME_TRY: dict[str | None, KillVerdict] = {
    None: NOT_KILLED,  # unknown: never cancel what no one may have asked to cancel
    "None": KILLED,  # cleared, not scheduled yet
    "deferred": NOT_KILLED,  # the trigger moved to another triggerer, or the task re-deferred after a resume
    "scheduled": NOT_KILLED,  # resumed from another copy of the trigger
    "queued": NOT_KILLED,
    "running": NOT_KILLED,
    "up_for_reschedule": NOT_KILLED,
    "restarting": NOT_KILLED,  # cleared while running after a resume: the worker's on_kill acts
    "up_for_retry": NOT_KILLED,  # the resumed task failed on its own; a retry may reuse the batches
    "success": UNLESS_WOKEN,  # a user's mark, or the resumed task's own end
    "failed": UNLESS_WOKEN,
    "skipped": KILLED,
    "upstream_failed": KILLED,
    "removed": KILLED,
    "awaiting_input": NOT_KILLED,  # a state this provider does not know
}


#: Where the try number is unknown (no triggerer can read it on Airflow 3.1-3.3), a task the scheduler has again
#: may have resumed or been cleared and re-queued: killed unless another copy of the trigger may have woken it.
WITH_THE_TRY_UNKNOWN = IN_THE_SAME_TRY | {state: UNLESS_WOKEN for state in ("scheduled", "queued", "running")}


@pytest.mark.parametrize("state", list(IN_THE_SAME_TRY))
def test_in_the_same_try_the_state_decides(state: str | None) -> None:
    assert judge_kill(state=state, try_number=2, deferred_try=2) is IN_THE_SAME_TRY[state]


@pytest.mark.parametrize("state", list(WITH_THE_TRY_UNKNOWN))
@pytest.mark.parametrize(("try_number", "deferred_try"), [(None, 2), (2, None), (None, None)])
def test_with_a_try_unknown_a_re_queued_task_is_killed_unless_woken(
    state: str | None, try_number: int | None, deferred_try: int | None
) -> None:
    assert judge_kill(state=state, try_number=try_number, deferred_try=deferred_try) is WITH_THE_TRY_UNKNOWN[state]


@pytest.mark.parametrize("state", list(IN_THE_SAME_TRY))
@pytest.mark.parametrize(("try_number", "deferred_try"), [(3, 2), (2, 1), (12, 2)])
def test_a_new_try_is_a_kill_whatever_the_state(state: str | None, try_number: int, deferred_try: int) -> None:
    # A clear (or a retry) started another try: scheduled, queued, running or deferred again, it is not this one.
    assert judge_kill(state=state, try_number=try_number, deferred_try=deferred_try) is KILLED


@pytest.mark.parametrize("state", list(WITH_THE_TRY_UNKNOWN))
def test_an_earlier_try_than_the_trigger_s_own_counts_as_unknown(state: str | None) -> None:
    # Only a stale record reads so; nothing can be told from it.
    assert judge_kill(state=state, try_number=1, deferred_try=2) is WITH_THE_TRY_UNKNOWN[state]


# -- Boundaries pinned by make mutate ------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0.5, 1, 60.0])
def test_any_positive_poll_interval_is_accepted(interval: float) -> None:
    assert WaitPolicy(poll_interval=interval).poll_interval == interval


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_poll_interval_must_be_positive_and_finite(interval: float) -> None:
    with pytest.raises(ValueError, match="poll interval"):
        WaitPolicy(poll_interval=interval)


@pytest.mark.parametrize("timeout", [0, 0.5, None])
def test_wait_timeout_of_zero_or_a_fraction_is_accepted(timeout: float | None) -> None:
    assert WaitPolicy(timeout=timeout).timeout == timeout


def test_budget_is_exhausted_only_past_its_size() -> None:
    budget = PollErrorBudget(2)
    assert budget.tolerates(ServerError("503", status_code=503))
    assert budget.tolerates(ServerError("503", status_code=503))
    assert not budget.exhausted  # exactly the budget: still waiting
    assert not budget.tolerates(ServerError("503", status_code=503))
    assert budget.exhausted


def test_decisions_and_policies_are_immutable() -> None:
    with pytest.raises(AttributeError):
        WaitPolicy().poll_interval = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        KeepWaiting().warning = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        GiveUp(message="m", retryable=False).message = "x"  # type: ignore[misc]
