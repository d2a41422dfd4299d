"""OpenAIBatchSensor against the emulator: deferral, execute_complete per status, failure policy, poke mode."""

from __future__ import annotations

import inspect
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import BaseSensorOperator

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL, OpenAIBatchTrigger
from tests._kit.airflow_compat import AirflowException, AirflowFailException, AirflowSkipException, TaskDeferred
from tests._kit.batches import batch_in_status, invalid_jsonl, new_batch, wait_for_status
from tests._kit.connection import set_connection
from tests._kit.ti import FakeTI, context

GET_BATCH = "GET /v1/batches/{id}"


class RecordingLog:
    """Stands in for the operator's logger; keeps the formatted messages."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str, msg: str, *args: Any, **_: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._record("info", msg, *args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._record("warning", msg, *args, **kw)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._record("debug", msg, *args, **kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._record("error", msg, *args, **kw)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        self._record("error", msg, *args, **kw)


def sensor(batch_id: str, **kwargs: Any) -> OpenAIBatchSensor:
    kwargs.setdefault("deferrable", True)
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    return OpenAIBatchSensor(task_id="wait", batch_id=batch_id, **kwargs)


def terminal_event(emulator: EmulatorServer, batch_id: str) -> dict[str, Any]:
    """The event the trigger fires for a finished batch (its batch as plain JSON)."""
    return {
        "status": EVENT_TERMINAL,
        "batch_id": batch_id,
        "batch": json.loads(json.dumps(emulator.get_batch(batch_id))),
    }


# -- deferring -------------------------------------------------------------------------------------------


def test_running_batch_defers_with_the_right_trigger(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    ti = FakeTI()
    op = sensor(batch.id, poke_interval=7.5, timeout=3600, max_consecutive_errors=3, cancel_on_kill=True)

    with pytest.raises(TaskDeferred) as info:
        op.execute(context(ti))

    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=3600)
    assert isinstance(deferred.trigger, OpenAIBatchTrigger)
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == "airflow_provider_openai_batch.triggers.batch.OpenAIBatchTrigger"
    assert kwargs["batch_id"] == batch.id
    assert kwargs["conn_id"] == "openai_default"
    assert kwargs["poll_interval"] == 7.5
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["max_consecutive_errors"] == 3
    assert "sk-emulator" not in repr(kwargs)
    # The batch id is in XCom before the task defers, so the extra link works while it waits.
    assert ti.pushes == [("batch_id", batch.id)]


def test_finished_batch_returns_without_deferring(openai_conn: EmulatorServer) -> None:
    batch = batch_in_status(openai_conn, "completed")
    ti = FakeTI()

    result = sensor(batch.id).execute(context(ti))

    assert result == batch.output_file_id
    assert ti.xcoms["error_file_id"] == batch.error_file_id
    assert ti.xcoms["batch"]["status"] == "completed"
    assert openai_conn.counters[GET_BATCH] == 1


def test_progress_is_logged_before_deferring(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")
    op = sensor(batch.id)
    op._cached_logger = RecordingLog()  # type: ignore[assignment]

    with pytest.raises(TaskDeferred):
        op.execute(context())

    lines = [text for level, text in op._cached_logger.lines if level == "info"]  # type: ignore[attr-defined]
    progress = next(text for text in lines if batch.id in text)
    assert re.search(
        rf"Batch {batch.id}: in_progress, \d+ completed / \d+ failed / 4 total \(\d+\.\d%\), elapsed 0h00m\d\ds",
        progress,
    ), progress


# -- execute_complete on every terminal status -------------------------------------------------------------


def test_completed_returns_output_and_pushes_xcoms(openai_conn: EmulatorServer) -> None:
    batch = batch_in_status(openai_conn, "completed")
    ti = FakeTI()

    result = sensor(batch.id).execute_complete(context(ti), terminal_event(openai_conn, batch.id))

    assert result == batch.output_file_id
    pushed = ti.xcoms
    assert pushed["output_file_id"] == batch.output_file_id
    assert pushed["error_file_id"] == batch.error_file_id
    assert pushed["batch"]["id"] == batch.id
    assert pushed["batch"]["request_counts"] == {"total": 4, "completed": 3, "failed": 1}


def test_failed_batch_fails_with_its_errors(openai_conn: EmulatorServer) -> None:
    batch = batch_in_status(openai_conn, "failed")
    assert batch.errors is not None
    error = batch.errors.data[0]
    ti = FakeTI()

    with pytest.raises(AirflowFailException) as info:
        sensor(batch.id).execute_complete(context(ti), terminal_event(openai_conn, batch.id))

    message = str(info.value)
    assert error.code == "url_mismatch" and error.code in message
    assert "line 2" in message
    assert error.message and error.message in message
    assert ti.xcoms["batch"]["status"] == "failed"  # pushed before failing: visible in the UI


@pytest.mark.parametrize("path", ["first_check", "trigger_event"])
def test_a_full_batch_queue_fails_with_retry_and_says_what_to_do(openai_conn: EmulatorServer, path: str) -> None:
    # token_limit_exceeded: the organization's enqueued-token limit was full; the same input succeeds later.
    batch = new_batch(4, metadata={"emulator": "token_limit"})
    wait_for_status(openai_conn, batch.id, "failed")
    op = sensor(batch.id)
    ti = FakeTI()

    with pytest.raises(AirflowException) as info:
        if path == "first_check":
            op.execute(context(ti))
        else:
            op.execute_complete(context(ti), terminal_event(openai_conn, batch.id))

    assert not isinstance(info.value, AirflowFailException)  # a retry may succeed
    message = str(info.value)
    assert "token_limit_exceeded" in message and "queue for this model was full" in message
    assert "fewer batches" in message and "Fix the input" not in message
    assert ti.xcoms["batch"]["status"] == "failed"


@pytest.mark.parametrize("status", ["expired", "cancelled"])
def test_partial_batch_fails_with_counts(openai_conn: EmulatorServer, status: str) -> None:
    batch = batch_in_status(openai_conn, status)
    counts = batch.request_counts

    with pytest.raises(AirflowFailException) as info:
        sensor(batch.id).execute_complete(context(), terminal_event(openai_conn, batch.id))

    message = str(info.value)
    assert f"{counts.completed} completed, {counts.failed} failed of {counts.total}" in message
    assert "allow_partial" in message


@pytest.mark.parametrize("status", ["expired", "cancelled"])
def test_partial_batch_is_accepted_with_allow_partial(openai_conn: EmulatorServer, status: str) -> None:
    batch = batch_in_status(openai_conn, status)
    assert batch.output_file_id and batch.request_counts.completed > 0
    ti = FakeTI()

    result = sensor(batch.id, allow_partial=True).execute_complete(context(ti), terminal_event(openai_conn, batch.id))

    assert result == batch.output_file_id
    assert ti.xcoms["error_file_id"] == batch.error_file_id


def test_partial_batch_without_any_result_fails_even_with_allow_partial(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    openai_conn.store.cancel_batch(batch.id)  # while validating: nothing finished
    batch = Batch.from_dict(wait_for_status(openai_conn, batch.id, "cancelled"))
    assert batch.request_counts.completed == 0

    with pytest.raises(AirflowFailException, match="no completed request"):
        sensor(batch.id, allow_partial=True).execute_complete(context(), terminal_event(openai_conn, batch.id))


# -- error events ----------------------------------------------------------------------------------------------


def test_retryable_error_event_fails_with_retry() -> None:
    event = {"status": EVENT_ERROR, "batch_id": "batch_x", "message": "gave up after 503s", "retryable": True}
    with pytest.raises(AirflowException, match="gave up after 503s") as info:
        sensor("batch_x").execute_complete(context(), event)
    assert not isinstance(info.value, AirflowFailException)


def test_permanent_error_event_fails_without_retry() -> None:
    event = {"status": EVENT_ERROR, "batch_id": "batch_x", "message": "No batch found", "retryable": False}
    with pytest.raises(AirflowFailException, match="No batch found"):
        sensor("batch_x").execute_complete(context(), event)


@pytest.mark.parametrize("event", [None, {}, {"status": "bogus"}, {"status": EVENT_TERMINAL, "batch": {"id": "b"}}])
def test_malformed_event_fails_clearly(event: Any) -> None:
    with pytest.raises(AirflowException) as info:
        sensor("batch_x").execute_complete(context(), event)
    assert not isinstance(info.value, AirflowFailException)


# -- failed requests policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "passes"),
    [(None, True), (0, False), (1, True), (2, True), (0.2, False), (0.25, True), (0.5, True), (0.0, False)],
)
def test_max_failed_requests(openai_conn: EmulatorServer, limit: int | float | None, passes: bool) -> None:
    batch = batch_in_status(openai_conn, "completed")  # 1 of 4 requests failed
    op = sensor(batch.id, max_failed_requests=limit)
    event = terminal_event(openai_conn, batch.id)
    if passes:
        assert op.execute_complete(context(), event) == batch.output_file_id
    else:
        with pytest.raises(AirflowFailException, match="1 failed requests of 4"):
            op.execute_complete(context(), event)


@pytest.mark.parametrize("limit", [None, 10, 0.99])
def test_all_requests_failed_always_fails(openai_conn: EmulatorServer, limit: int | float | None) -> None:
    batch = new_batch(3, failing=3)
    done = Batch.from_dict(wait_for_status(openai_conn, batch.id, "completed"))
    assert done.request_counts.failed == 3 and done.output_file_id is None

    with pytest.raises(AirflowFailException, match="every request failed"):
        sensor(batch.id, max_failed_requests=limit).execute_complete(context(), terminal_event(openai_conn, batch.id))


@pytest.mark.parametrize("limit", [-1, 1.0, 1.5, -0.1, True, "3"])
def test_invalid_max_failed_requests_is_rejected_at_parse_time(limit: Any) -> None:
    with pytest.raises(ValueError, match="max_failed_requests"):
        sensor("batch_x", max_failed_requests=limit)


# -- poke mode -----------------------------------------------------------------------------------------------


def test_poke_mode_waits_and_returns_the_output(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4)
    ti = FakeTI()

    result = sensor(batch.id, deferrable=False).execute(context(ti))

    done = Batch.from_dict(openai_conn.get_batch(batch.id))
    assert result == done.output_file_id is not None
    assert ti.xcoms["batch_id"] == batch.id
    assert ti.xcoms["batch"]["status"] == "completed"
    assert openai_conn.counters[GET_BATCH] >= 2


def test_poke_mode_tolerates_a_transient_error(openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, openai_conn.base_url, max_retries=0)  # the poke itself sees the 503
    batch = new_batch(4)
    rule = openai_conn.faults.add(GET_BATCH, "status", status=503, times=1)
    op = sensor(batch.id, deferrable=False)
    op._cached_logger = RecordingLog()  # type: ignore[assignment]

    result = op.execute(context())

    assert rule.fired == 1
    assert result == openai_conn.get_batch(batch.id)["output_file_id"]
    warnings = [text for level, text in op._cached_logger.lines if level == "warning"]  # type: ignore[attr-defined]
    assert any("503" in text for text in warnings), warnings


def test_poke_mode_fails_fast_on_unknown_batch(openai_conn: EmulatorServer) -> None:
    with pytest.raises(AirflowFailException, match="batch_unknown"):
        sensor("batch_unknown", deferrable=False).execute(context())
    assert openai_conn.counters[GET_BATCH] == 1


def test_poke_mode_gives_up_after_too_many_transient_errors(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    batch = new_batch(4)
    openai_conn.faults.add(GET_BATCH, "status", status=503, times=None)

    with pytest.raises(AirflowException, match="503") as info:
        sensor(batch.id, deferrable=False, max_consecutive_errors=2).execute(context())

    assert not isinstance(info.value, AirflowFailException)  # network trouble may heal: fail with retry
    assert openai_conn.counters[GET_BATCH] == 3


def test_poke_mode_fails_a_failed_batch_with_its_errors(openai_conn: EmulatorServer) -> None:
    batch = new_batch(content=invalid_jsonl())
    with pytest.raises(AirflowFailException, match="url_mismatch"):
        sensor(batch.id, deferrable=False).execute(context())


def test_poke_logs_progress(openai_conn: EmulatorServer) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")
    op = sensor(batch.id, deferrable=False)
    op._cached_logger = RecordingLog()  # type: ignore[assignment]

    assert op.poke(context()) is False

    (line,) = [text for level, text in op._cached_logger.lines if level == "info"]  # type: ignore[attr-defined]
    assert re.fullmatch(
        rf"Batch {batch.id}: in_progress, (\d) completed / 0 failed / 4 total \(\d+\.\d%\), elapsed 0h00m0\ds", line
    ), line


# -- soft_fail / never_fail: the check before deferring behaves like the trigger path ---------------------------


#: Whether this Airflow's BaseSensorOperator turns a failure after the trigger into a skip for never_fail too.
TRIGGER_PATH_HONOURS_NEVER_FAIL = "never_fail" in inspect.getsource(BaseSensorOperator.resume_execution)


def trigger_path_event(emulator: EmulatorServer, batch_id: str, kind: str) -> dict[str, Any]:
    """What the trigger would fire for the same situation the first check meets."""
    if kind == "failed_batch":
        return terminal_event(emulator, batch_id)
    return {"status": EVENT_ERROR, "batch_id": batch_id, "message": "No batch found", "retryable": False}


@pytest.mark.parametrize("flag", ["soft_fail", "never_fail", None])
@pytest.mark.parametrize("kind", ["failed_batch", "batch_not_found"])
def test_first_check_honours_soft_fail_and_never_fail_like_the_trigger_path(
    openai_conn: EmulatorServer, kind: str, flag: str | None
) -> None:
    batch_id = batch_in_status(openai_conn, "failed").id if kind == "failed_batch" else "batch_does_not_exist"
    flags = {flag: True} if flag else {}
    expected = AirflowSkipException if flag else AirflowFailException

    for path in ("first_check", "trigger_path"):
        if path == "trigger_path" and flag == "never_fail" and not TRIGGER_PATH_HONOURS_NEVER_FAIL:
            continue  # Airflow 3.1's resume_execution knows soft_fail only; the first check follows newer Airflow
        op = sensor(batch_id, **flags)
        with pytest.raises(AirflowException) as info:
            if path == "first_check":
                op.execute(context())
            else:
                op.resume_execution(
                    "execute_complete", {"event": trigger_path_event(openai_conn, batch_id, kind)}, {"ti": FakeTI()}
                )
        assert type(info.value) is expected, (path, info.value)
        if flag and path == "first_check":  # the trigger path's wording is Airflow's, and 3.1 words it otherwise
            assert f"Skipping due to {flag} is set to True." in str(info.value)


# -- mode="reschedule": the run of failed polls survives reschedules -----------------------------------------


class StateStore:
    """The task instance's state store of Airflow 3.3+ (``context["task_state_store"]``): survives reschedules."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        json.dumps(value)
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def rescheduled_poke(batch_id: str, store: StateStore | None, **kwargs: Any) -> bool | Any:
    """One poke as a reschedule runs it: a fresh sensor object in a fresh process, only the store survives."""
    op = sensor(batch_id, deferrable=False, mode="reschedule", max_consecutive_errors=2, **kwargs)
    ctx = context()
    if store is not None:
        ctx["task_state_store"] = store
    return op.poke(ctx)


def test_reschedule_mode_counts_failed_polls_across_reschedules(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    batch = new_batch(4, metadata={"emulator": "hold"})
    store = StateStore()
    assert rescheduled_poke(batch.id, store) is False  # a healthy poke stores nothing
    assert store.values == {}
    outage = openai_conn.faults.add(GET_BATCH, "status", status=503, times=None)

    assert rescheduled_poke(batch.id, store) is False
    assert rescheduled_poke(batch.id, store) is False
    with pytest.raises(AirflowException, match="too many consecutive transient failures") as info:
        rescheduled_poke(batch.id, store)

    assert not isinstance(info.value, AirflowFailException)  # an outage may end: fail with retry
    assert outage.fired == 3
    assert store.values == {}  # the next try starts afresh


def test_reschedule_mode_a_good_poll_ends_the_run_of_failures(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    batch = new_batch(4, metadata={"emulator": "hold"})
    store = StateStore()
    for _ in range(3):  # 2 failures, 1 success, ...: never more than 2 in a row with a budget of 2
        rule = openai_conn.faults.add(GET_BATCH, "status", status=503, times=2)
        assert rescheduled_poke(batch.id, store) is False
        assert rescheduled_poke(batch.id, store) is False
        assert store.values != {}
        assert rescheduled_poke(batch.id, store) is False
        assert rule.fired == 2 and store.values == {}


def test_reschedule_mode_without_a_state_store_rides_out_failures_within_the_poke(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow 3.1 and 3.2 keep no task state across reschedules: the poke itself polls again, within the budget.
    set_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    batch = new_batch(4, metadata={"emulator": "hold"})
    openai_conn.faults.add(GET_BATCH, "status", status=503, times=None)

    with pytest.raises(AirflowException, match="too many consecutive transient failures"):
        rescheduled_poke(batch.id, None)

    assert openai_conn.counters[GET_BATCH] == 3


def test_reschedule_mode_without_a_state_store_returns_once_polls_work_again(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, openai_conn.base_url, max_retries=0)
    batch = new_batch(4, metadata={"emulator": "hold"})
    rule = openai_conn.faults.add(GET_BATCH, "status", status=503, times=2)

    assert rescheduled_poke(batch.id, None) is False

    assert rule.fired == 2 and openai_conn.counters[GET_BATCH] == 3
