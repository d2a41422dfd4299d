"""OpenAIBatchSensor: waits for a batch to finish, deferrable or poking."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_openai_batch._compat import (
    AirflowException,
    AirflowRescheduleException,
    AirflowSkipException,
    default_deferrable,
)
from airflow_provider_openai_batch.links import OpenAIBatchLink
from airflow_provider_openai_batch.wait_decision import BatchWaitDecision, Finished, KeepWaiting, Step, WaitPolicy
from airflow_provider_openai_batch.waiting import BatchWaitMixin, as_seconds
from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["POLL_ERRORS_KEY", "OpenAIBatchSensor"]

#: Key in the task instance's state store (Airflow 3.3+) of the run of failed polls of a rescheduled sensor.
POLL_ERRORS_KEY = "openai_batch_consecutive_poll_errors"


def _stored_errors(store: Any) -> int:
    value = store.get(POLL_ERRORS_KEY, 0) if store is not None else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class OpenAIBatchSensor(BatchWaitMixin, BaseSensorOperator):
    """Waits until a batch is terminal and returns its ``output_file_id``.

    The sensor checks once; a finished batch needs no triggerer. Otherwise it defers to
    :class:`~airflow_provider_openai_batch.triggers.batch.OpenAIBatchTrigger` (no worker slot held) or,
    with ``deferrable=False``, pokes every ``poke_interval`` seconds (``mode="reschedule"`` frees the slot
    between pokes).

    XComs: ``return_value`` = ``output_file_id``; ``error_file_id``; ``batch`` (status, request counts,
    usage, errors, timestamps); ``cost`` (input, cached input, output and reasoning tokens, and the cost in
    USD at batch prices with the prices' date and source; ``None`` when the batch reports no usage).

    Failure: ``failed`` fails the task with the batch's errors (code, line, message); ``expired`` and
    ``cancelled`` fail with the partial counts unless ``allow_partial``; a completed batch fails when every
    request failed or more than ``max_failed_requests`` did. These do not heal by retrying, so they fail
    without retry; network trouble that outlasts the retries fails with retry.

    :param batch_id: the batch to wait for (templated), e.g. ``"{{ ti.xcom_pull('create', key='batch_id') }}"``.
    :param conn_id: Airflow connection id.
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls, in both modes.
    :param allow_partial: accept the partial results of an expired or cancelled batch.
    :param max_failed_requests: failed requests a completed batch may have: a count (int) or a share of
        the total (float in [0, 1)); ``None`` accepts any number short of all.
    :param cancel_on_kill: cancel the batch when a user kills the deferred sensor (Airflow 3.3+). Off by
        default: a sensor usually watches a batch another task owns.
    :param max_consecutive_errors: transient poll failures in a row tolerated before giving up.
    :param prices: price overrides for the ``cost`` XCom, ``{model: {"input", "output", "cached_input"?}}``
        in USD per 1M tokens at batch prices, over the shipped table and the connection extra's ``prices``.
    """

    template_fields: Sequence[str] = ("batch_id", "conn_id")
    operator_extra_links = (OpenAIBatchLink(),)
    ui_color = "#10a37f"

    def __init__(
        self,
        *,
        batch_id: str,
        conn_id: str = "openai_default",
        deferrable: bool | None = None,
        poke_interval: timedelta | float = 60,
        allow_partial: bool = False,
        max_failed_requests: int | float | None = None,
        cancel_on_kill: bool = False,
        max_consecutive_errors: int = 10,
        prices: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(as_seconds(poke_interval) or 60.0)
        self.allow_partial = allow_partial
        self.max_failed_requests = max_failed_requests
        self.cancel_on_kill = cancel_on_kill
        self.max_consecutive_errors = max_consecutive_errors
        self.prices = prices
        self._poke_decision: BatchWaitDecision | None = None
        self.wait_policy()  # a bad value fails when the DAG is parsed, not hours later

    def wait_policy(self) -> WaitPolicy:
        return WaitPolicy(
            poll_interval=self.poll_interval,
            timeout=as_seconds(self.timeout),
            cancel_on_kill=self.cancel_on_kill,
            allow_partial=self.allow_partial,
            max_failed_requests=self.max_failed_requests,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    def execute(self, context: Context) -> Any:
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=self.batch_id)
        if not self.deferrable:
            return super().execute(context)
        try:
            batch = self.wait_until_terminal(self.batch_id)
            return self.finish(context, batch).output_file_id
        except (AirflowSkipException, AirflowRescheduleException):
            raise
        except AirflowException as exc:
            # The check before deferring fails the way the trigger path (resume_execution) does.
            if self.soft_fail or self.never_fail:
                flag = "soft_fail" if self.soft_fail else "never_fail"
                raise AirflowSkipException(f"Skipping due to {flag} is set to True.") from exc
            raise

    def poke(self, context: Context) -> PokeReturnValue | bool:
        # One decision across pokes: one 503 must not end a day-long wait, a permanent error (401, 404) must
        # end it at once and without retry, as in deferrable mode (a retry would only meet the same 404).
        # In reschedule mode every poke runs in a fresh process, so the run of failures is kept in the task
        # instance's state store (Airflow 3.3+); without one, the failures are ridden out within the poke.
        store = context.get("task_state_store") if self.reschedule else None
        if self._poke_decision is None:  # BaseSensorOperator keeps the time: no deadline here
            self._poke_decision = BatchWaitDecision(
                self.batch_id, replace(self.wait_policy(), timeout=None), consecutive_errors=_stored_errors(store)
            )
        decision = self._poke_decision
        counted = decision.consecutive_errors
        step: Step | None = None
        try:
            step = self._poll(decision)
            while self.reschedule and store is None and isinstance(step, KeepWaiting) and step.batch is None:
                self._carry_out(step)  # a tolerated failure: no state would carry its count to the next poke
                time.sleep(self.poll_interval)
                step = self._poll(decision)
        finally:
            if store is not None:  # a failure run goes on, or ends (success, or giving up: the next try starts afresh)
                now = decision.consecutive_errors if isinstance(step, KeepWaiting) else 0
                if now and now != counted:
                    store.set(POLL_ERRORS_KEY, now)
                elif not now and counted:
                    store.delete(POLL_ERRORS_KEY)
        if isinstance(step, Finished):
            return PokeReturnValue(is_done=True, xcom_value=self.finish(context, step.batch).output_file_id)
        self._carry_out(step)
        return False

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str | None:
        """Resume after the trigger fired: judge the batch it carried."""
        return self.finish(context, self.batch_from_event(event)).output_file_id
