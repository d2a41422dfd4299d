"""Waiting for a batch, shared by the sensor and the operators that wait.

One implementation of: check once, then defer to :class:`OpenAIBatchTrigger` or poll in the worker;
turn the trigger's event back into a batch; push the result XComs; fail with the batch's own explanation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.outcome import BatchOutcome, PollErrorBudget, Verdict, describe_progress, judge_batch

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_openai_batch.pricing import PriceTable

__all__ = [
    "XCOM_BATCH",
    "XCOM_BATCH_ID",
    "XCOM_COST",
    "XCOM_ERROR_FILE_ID",
    "XCOM_OUTPUT_FILE_ID",
    "BatchWaitMixin",
    "default_deferrable",
]

#: XCom keys pushed by the sensor and the operators.
XCOM_BATCH_ID = "batch_id"
XCOM_OUTPUT_FILE_ID = "output_file_id"
XCOM_ERROR_FILE_ID = "error_file_id"
XCOM_BATCH = "batch"
XCOM_COST = "cost"


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from the Airflow configuration (False when unset)."""
    try:
        from airflow.sdk import conf
    except ImportError:  # Airflow 3.1 exposes it only here
        from airflow.configuration import conf  # type: ignore[assignment]

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def airflow_exceptions() -> tuple[type[Exception], type[Exception]]:
    """``(AirflowException, AirflowFailException)`` from the Task SDK, or from ``airflow.exceptions`` on 3.1."""
    try:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException
    except ImportError:  # Airflow 3.1's Task SDK has no AirflowFailException yet
        from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[assignment,no-redef,attr-defined]
    return AirflowException, AirflowFailException


def as_seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class BatchWaitMixin:
    """Wait logic for an operator; the class using it sets the attributes below in ``__init__``."""

    conn_id: str
    poll_interval: float
    deferrable: bool
    cancel_on_kill: bool
    allow_partial: bool
    max_failed_requests: int | float | None
    max_consecutive_errors: int
    #: price overrides given to the operator (see :mod:`~airflow_provider_openai_batch.pricing`).
    prices: Mapping[str, Any] | str | None = None

    @cached_property
    def hook(self) -> OpenAIBatchHook:
        """Built on first use: no connection lookup while a DAG file is parsed."""
        return OpenAIBatchHook(self.conn_id)

    def _wait_timeout(self) -> float | None:
        """Seconds the wait may last; ``None`` waits as long as the batch runs."""
        raise NotImplementedError

    # -- waiting -------------------------------------------------------------------------------

    def wait_until_terminal(self, batch: Batch) -> Batch:
        """Return ``batch`` once terminal: at once if it already is, else defer or poll here.

        Deferring raises ``TaskDeferred``; the task resumes in ``execute_complete``.
        """
        if batch.status.is_terminal:
            return batch
        self.log.info("%s", describe_progress(batch))  # type: ignore[attr-defined]
        if self.deferrable:
            # Imported here: DAG files import the operators, and only deferring needs the trigger module.
            from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

            timeout = self._wait_timeout()
            self.defer(  # type: ignore[attr-defined]
                trigger=OpenAIBatchTrigger(
                    conn_id=self.conn_id,
                    batch_id=batch.id,
                    poll_interval=self.poll_interval,
                    cancel_on_kill=self.cancel_on_kill,
                    max_consecutive_errors=self.max_consecutive_errors,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=timeout) if timeout is not None else None,
            )
        return self._poll_until_terminal(batch.id)

    def _poll_until_terminal(self, batch_id: str) -> Batch:
        AirflowException, AirflowFailException = airflow_exceptions()

        timeout = self._wait_timeout()
        deadline = time.monotonic() + timeout if timeout is not None else None
        budget = PollErrorBudget(self.max_consecutive_errors)
        while True:
            try:
                batch = self.hook.retrieve_batch(batch_id)
            except Exception as exc:
                if not budget.tolerates(exc):
                    failure = (
                        AirflowException if budget.consecutive > self.max_consecutive_errors else AirflowFailException
                    )
                    raise failure(f"Stopped waiting for batch {batch_id}: {exc}") from exc
                self.log.warning("Polling batch %s failed (%d in a row): %s", batch_id, budget.consecutive, exc)  # type: ignore[attr-defined]
            else:
                budget.success()
                self.log.info("%s", describe_progress(batch))  # type: ignore[attr-defined]
                if batch.status.is_terminal:
                    return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise AirflowException(
                    f"Timed out after {timeout:.0f}s waiting for batch {batch_id}; it is still running and was not "
                    "cancelled. Raise the timeout, or wait for it with OpenAIBatchSensor."
                )
            time.sleep(self.poll_interval)

    def batch_from_event(self, event: dict[str, Any] | None) -> Batch:
        """The batch carried by a trigger event; an error event fails the task with its explanation."""
        AirflowException, AirflowFailException = airflow_exceptions()

        from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL

        if not isinstance(event, dict) or event.get("status") not in (EVENT_TERMINAL, EVENT_ERROR):
            raise AirflowException(f"Unexpected trigger event: {event!r}")
        if event["status"] == EVENT_ERROR:
            message = str(event.get("message") or "the trigger stopped without a message")
            raise (AirflowException if event.get("retryable") else AirflowFailException)(message)
        try:
            return Batch.from_dict(event["batch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AirflowException(f"Trigger event carries no valid batch: {exc}") from exc

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
        """Judge a terminal batch, push its XComs, and fail the task (without retry) when it failed.

        A failed, expired or cancelled batch cannot heal by running the same task again, so it raises
        ``AirflowFailException``.
        """
        _, AirflowFailException = airflow_exceptions()

        outcome = judge_batch(batch, allow_partial=self.allow_partial, max_failed_requests=self.max_failed_requests)
        self.push_batch_xcoms(context, batch)
        if outcome.verdict is Verdict.FAIL:
            raise AirflowFailException(outcome.message)
        self.log.info("%s", outcome.message)  # type: ignore[attr-defined]
        return outcome
