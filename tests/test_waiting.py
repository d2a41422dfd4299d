"""waiting.py: the wait logic shared by the sensor and the operators (check once, defer or poll, events)."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_openai_batch._compat import default_deferrable
from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL, OpenAIBatchTrigger
from airflow_provider_openai_batch.wait_decision import WaitPolicy
from airflow_provider_openai_batch.waiting import BatchWaitMixin, as_seconds
from tests._kit.airflow_compat import AirflowException, AirflowFailException, TaskDeferred

GET_BATCH = "GET /v1/batches/{id}"
LINE = {
    "custom_id": "r1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
}


class Waiter(BatchWaitMixin):
    """The smallest operator that waits for a batch: a connection id and a wait policy."""

    def __init__(self, *, deferrable: bool, timeout: float | None = 10.0, **kwargs: Any) -> None:
        super().__init__(task_id="wait", **kwargs)
        self.conn_id = "openai_default"
        self.deferrable = deferrable
        self.timeout_s = timeout

    def wait_policy(self) -> WaitPolicy:
        return WaitPolicy(poll_interval=0.05, timeout=self.timeout_s, max_consecutive_errors=2)


def new_batch(metadata: dict[str, str] | None = None) -> Batch:
    hook = OpenAIBatchHook()
    uploaded = hook.upload_file(io.BytesIO((json.dumps(LINE) + "\n").encode()), filename="in.jsonl")
    return hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions", metadata=metadata)


def test_terminal_batch_needs_no_wait(openai_conn: EmulatorServer) -> None:
    batch = Batch(id="batch_done", status=BatchStatus.COMPLETED)
    assert Waiter(deferrable=True).wait_until_terminal(batch) is batch
    assert openai_conn.counters["requests"] == 0


def test_running_batch_defers(openai_conn: EmulatorServer) -> None:
    batch = Batch(id="batch_run", status=BatchStatus.IN_PROGRESS)
    with pytest.raises(TaskDeferred) as info:
        Waiter(deferrable=True, timeout=90).wait_until_terminal(batch)
    assert isinstance(info.value.trigger, OpenAIBatchTrigger)
    assert info.value.trigger.batch_id == "batch_run"
    assert info.value.timeout == timedelta(seconds=90)
    assert openai_conn.counters["requests"] == 0


def test_no_timeout_defers_without_one(openai_conn: EmulatorServer) -> None:
    with pytest.raises(TaskDeferred) as info:
        Waiter(deferrable=True, timeout=None).wait_until_terminal(Batch(id="b", status=BatchStatus.VALIDATING))
    assert info.value.timeout is None


def test_polls_in_the_worker_until_terminal(openai_conn: EmulatorServer) -> None:
    batch = new_batch()
    done = Waiter(deferrable=False).wait_until_terminal(batch)
    assert done.status is BatchStatus.COMPLETED
    assert openai_conn.counters[GET_BATCH] >= 2


def test_poll_times_out_and_leaves_the_batch(openai_conn: EmulatorServer) -> None:
    batch = new_batch({"emulator": "hold"})
    started = time.monotonic()
    with pytest.raises(AirflowException, match="Timed out after 0s") as info:
        Waiter(deferrable=False, timeout=0.3).wait_until_terminal(batch)
    assert not isinstance(info.value, AirflowFailException)
    assert time.monotonic() - started < 3
    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0


def test_poll_fails_fast_on_a_permanent_error(openai_conn: EmulatorServer) -> None:
    with pytest.raises(AirflowFailException, match="batch_gone"):
        Waiter(deferrable=False).wait_until_terminal("batch_gone")
    assert openai_conn.counters[GET_BATCH] == 1


def test_poll_gives_up_after_too_many_transient_errors(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {
                "conn_type": "openai_batch",
                "password": "sk-emulator",
                "host": openai_conn.base_url,
                "extra": {"max_retries": 0},
            }
        ),
    )
    batch = new_batch({"emulator": "hold"})
    openai_conn.faults.add(GET_BATCH, "status", status=503, times=None)
    with pytest.raises(AirflowException, match="503") as info:
        Waiter(deferrable=False).wait_until_terminal(batch.id)
    assert not isinstance(info.value, AirflowFailException)
    assert openai_conn.counters[GET_BATCH] == 3  # max_consecutive_errors=2, then the one that ends it


def test_batch_from_a_terminal_event() -> None:
    payload = Batch(id="batch_1", status=BatchStatus.EXPIRED).to_dict()
    batch = Waiter(deferrable=True).batch_from_event(
        {"status": EVENT_TERMINAL, "batch": json.loads(json.dumps(payload))}
    )
    assert batch.id == "batch_1" and batch.status is BatchStatus.EXPIRED


@pytest.mark.parametrize(
    ("event", "exc"),
    [
        ({"status": EVENT_ERROR, "message": "boom", "retryable": True}, AirflowException),
        ({"status": EVENT_ERROR, "message": "boom", "retryable": False}, AirflowFailException),
        ({"status": EVENT_ERROR}, AirflowFailException),
        (None, AirflowException),
        ("terminal", AirflowException),
        ({"status": EVENT_TERMINAL}, AirflowException),
        ({"status": EVENT_TERMINAL, "batch": {"id": "b", "status": "exploded"}}, AirflowException),
    ],
)
def test_bad_or_error_events_raise(event: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc) as info:
        Waiter(deferrable=True).batch_from_event(event)
    assert type(info.value) is exc


@pytest.mark.parametrize(("value", "seconds"), [(None, None), (5, 5.0), (2.5, 2.5), (timedelta(minutes=2), 120.0)])
def test_as_seconds(value: Any, seconds: float | None) -> None:
    assert as_seconds(value) == seconds


def test_default_deferrable_follows_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert default_deferrable() is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert default_deferrable() is False
