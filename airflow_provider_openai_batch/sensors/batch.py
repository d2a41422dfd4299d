"""OpenAIBatchSensor: waits for a batch to finish, deferrable or poking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_openai_batch.links import OpenAIBatchLink
from airflow_provider_openai_batch.outcome import FailedRequestsPolicy, PollErrorBudget, describe_progress
from airflow_provider_openai_batch.waiting import (
    XCOM_BATCH_ID,
    BatchWaitMixin,
    airflow_exceptions,
    as_seconds,
    default_deferrable,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["OpenAIBatchSensor"]


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
        FailedRequestsPolicy(max_failed_requests)  # validate at parse time
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(as_seconds(poke_interval) or 60.0)
        self.allow_partial = allow_partial
        self.max_failed_requests = max_failed_requests
        self.cancel_on_kill = cancel_on_kill
        self.max_consecutive_errors = max_consecutive_errors
        self.prices = prices

    def _wait_timeout(self) -> float | None:
        return as_seconds(self.timeout)

    def execute(self, context: Context) -> Any:
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=self.batch_id)
        if not self.deferrable:
            return super().execute(context)
        batch = self.wait_until_terminal(self.hook.retrieve_batch(self.batch_id))
        return self.finish(context, batch).output_file_id

    @cached_property
    def _poke_errors(self) -> PollErrorBudget:
        return PollErrorBudget(self.max_consecutive_errors)

    def poke(self, context: Context) -> PokeReturnValue | bool:
        try:
            batch = self.hook.retrieve_batch(self.batch_id)
        except Exception as exc:
            # One 503 must not end a day-long wait; a permanent error (401, 404) must end it at once, and
            # without retry, as in deferrable mode (a retry would only meet the same 404).
            if not self._poke_errors.tolerates(exc):
                AirflowException, AirflowFailException = airflow_exceptions()

                gave_up = self._poke_errors.consecutive > self.max_consecutive_errors
                raise (AirflowException if gave_up else AirflowFailException)(
                    f"Stopped waiting for batch {self.batch_id}: {exc}"
                ) from exc
            self.log.warning("Poke failed (%d in a row), trying again: %s", self._poke_errors.consecutive, exc)
            return False
        self._poke_errors.success()
        if not batch.status.is_terminal:
            self.log.info("%s", describe_progress(batch))
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(context, batch).output_file_id)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str | None:
        """Resume after the trigger fired: judge the batch it carried."""
        return self.finish(context, self.batch_from_event(event)).output_file_id
