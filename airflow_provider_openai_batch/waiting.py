"""Waiting for a batch, shared by the sensor and the operators that wait: the Airflow side of the wait.

Check once, then defer to :class:`~airflow_provider_openai_batch.triggers.batch.OpenAIBatchTrigger` or poll in
the worker; turn the trigger's event back into a batch; push the result XComs; fail with the batch's own
explanation. Every decision (keep waiting, finished, give up, and with or without retry) comes from
:class:`~airflow_provider_openai_batch.wait_decision.BatchWaitDecision`; this module only does the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_openai_batch._compat import AirflowException, AirflowFailException
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.outcome import BatchOutcome, Verdict, describe_progress
from airflow_provider_openai_batch.wait_decision import (
    BatchWaitDecision,
    Finished,
    GiveUp,
    KeepWaiting,
    Step,
    WaitPolicy,
)
from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH, XCOM_COST, XCOM_ERROR_FILE_ID, XCOM_OUTPUT_FILE_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openai_batch.pricing import PriceTable

__all__ = ["BatchWaitMixin", "as_seconds", "raise_give_up"]


def as_seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def raise_give_up(step: GiveUp, cause: BaseException | None = None) -> NoReturn:
    """Fail the task as ``step`` says: with retry (``AirflowException``) or without (``AirflowFailException``)."""
    raise (AirflowException if step.retryable else AirflowFailException)(step.message) from cause


class BatchWaitMixin(BaseOperator):
    """The wait for an operator: the operator sets ``conn_id`` and says how to wait in :meth:`wait_policy`."""

    conn_id: str
    deferrable: bool
    #: price overrides given to the operator (see :mod:`~airflow_provider_openai_batch.pricing`).
    prices: Mapping[str, Any] | str | None = None

    @cached_property
    def hook(self) -> OpenAIBatchHook:
        """Built on first use: no connection lookup while a DAG file is parsed."""
        return OpenAIBatchHook(self.conn_id)

    def wait_policy(self) -> WaitPolicy:
        """How this operator waits and judges the batch; built from its arguments."""
        raise NotImplementedError

    # -- waiting -------------------------------------------------------------------------------

    def wait_until_terminal(self, batch: Batch | str) -> Batch:
        """Return the batch once terminal: at once if it already is, else defer or poll here.

        :param batch: the batch as last seen (it is judged without a poll), or its id (polled once first).
        Deferring raises ``TaskDeferred``; the task resumes in ``execute_complete``.
        """
        policy = self.wait_policy()
        batch_id = batch if isinstance(batch, str) else batch.id
        decision = BatchWaitDecision(batch_id, policy, started_at=time.monotonic())
        step = self._poll(decision) if isinstance(batch, str) else decision.on_batch(batch, now=time.monotonic())
        while not isinstance(step, Finished):
            self._carry_out(step)
            if self.deferrable:
                self._defer(batch_id, policy)
            time.sleep(policy.poll_interval)
            step = self._poll(decision)
        return step.batch

    def _poll(self, decision: BatchWaitDecision) -> Step:
        try:
            batch = self.hook.retrieve_batch(decision.batch_id)
        except Exception as exc:
            step = decision.on_error(exc, now=time.monotonic())
            if isinstance(step, GiveUp):
                raise_give_up(step, exc)
            return step
        return decision.on_batch(batch, now=time.monotonic())

    def _carry_out(self, step: Step) -> None:
        """Log what a keep-waiting step asks for; fail the task on a give-up step."""
        if isinstance(step, GiveUp):
            raise_give_up(step)
        if isinstance(step, KeepWaiting):
            if step.warning:
                self.log.warning("%s", step.warning)
            if step.log_progress and step.batch is not None:
                self.log.info("%s", describe_progress(step.batch))

    def _defer(self, batch_id: str, policy: WaitPolicy) -> None:
        # Imported here: DAG files import the operators, and only deferring needs the trigger module.
        from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

        self.defer(
            trigger=OpenAIBatchTrigger(
                conn_id=self.conn_id,
                batch_id=batch_id,
                poll_interval=policy.poll_interval,
                cancel_on_kill=policy.cancel_on_kill,
                max_consecutive_errors=policy.max_consecutive_errors,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=policy.timeout) if policy.timeout is not None else None,
        )

    def batch_from_event(self, event: dict[str, Any] | None) -> Batch:
        """The batch carried by a trigger event; an error event fails the task with its explanation."""
        from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL

        if not isinstance(event, dict) or event.get("status") not in (EVENT_TERMINAL, EVENT_ERROR):
            raise AirflowException(f"Unexpected trigger event: {event!r}")
        if event["status"] == EVENT_ERROR:
            message = str(event.get("message") or "the trigger stopped without a message")
            raise_give_up(GiveUp(message, retryable=bool(event.get("retryable"))))
        try:
            batch = Batch.from_dict(event["batch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AirflowException(f"Trigger event carries no valid batch: {exc}") from exc
        if not batch.status.is_terminal:
            raise AirflowException(f"Trigger event carries batch {batch.id} in status {batch.status.value!r}, not done")
        return batch

    # -- finishing -----------------------------------------------------------------------------

    def price_table(self) -> PriceTable:
        """The shipped prices, overridden by the connection extra's ``prices`` and then by ``self.prices``."""
        from airflow_provider_openai_batch.budget import task_price_table

        return task_price_table(self)

    def report_cost(self, batch: Batch) -> dict[str, Any] | None:
        """The batch's usage and cost at batch prices, logged in one line; ``None`` without ``usage``."""
        from airflow_provider_openai_batch.budget import report_cost

        return report_cost(self, [(batch.model, batch.usage)], self.price_table)

    def push_batch_xcoms(self, context: Context, batch: Batch) -> None:
        """Push ``output_file_id``, ``error_file_id``, the ``batch`` summary and its ``cost``."""
        ti = context["ti"]
        ti.xcom_push(key=XCOM_OUTPUT_FILE_ID, value=batch.output_file_id)
        ti.xcom_push(key=XCOM_ERROR_FILE_ID, value=batch.error_file_id)
        ti.xcom_push(key=XCOM_BATCH, value=batch.summary())
        ti.xcom_push(key=XCOM_COST, value=self.report_cost(batch))

    def finish(self, context: Context, batch: Batch) -> BatchOutcome:
        """Judge a terminal batch, push its XComs, and fail the task when it failed.

        A failed, expired or cancelled batch cannot heal by running the same task again, so it fails without
        retry (``AirflowFailException``); a capacity failure (the queue was full) fails with retry.
        """
        outcome = self.wait_policy().judge(batch)
        self.push_batch_xcoms(context, batch)
        if outcome.verdict is Verdict.FAIL:
            raise (AirflowException if outcome.retryable else AirflowFailException)(outcome.message)
        self.log.info("%s", outcome.message)
        return outcome
