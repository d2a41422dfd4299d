"""OpenAIBatchTrigger: waits for a batch in the triggerer without blocking its event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.outcome import describe_progress
from airflow_provider_openai_batch.triggers._kill import cancel_if_killed, cancel_running
from airflow_provider_openai_batch.triggers._shared import Subscription, subscribe
from airflow_provider_openai_batch.wait_decision import BatchWaitDecision, Finished, GiveUp, WaitPolicy

__all__ = ["EVENT_ERROR", "EVENT_TERMINAL", "OpenAIBatchTrigger"]

log = logging.getLogger(__name__)

#: Event status: the batch reached a terminal status; ``event["batch"]`` holds it as plain JSON.
EVENT_TERMINAL = "terminal"
#: Event status: polling gave up; ``event["message"]`` says why, ``event["retryable"]`` whether a retry may help.
EVENT_ERROR = "error"


class OpenAIBatchTrigger(BaseTrigger):
    """Polls ``GET /batches/{id}`` until the batch is terminal, then fires one event.

    Each poll is a native asyncio HTTP request (``httpx``) on a kept-alive connection; the connection is
    looked up asynchronously; waits are ``asyncio.sleep``. Nothing blocks the triggerer's loop.
    The kwargs hold no secret, only the connection id, so they are safe in the trigger table.

    :param conn_id: Airflow connection id, resolved inside :meth:`run`.
    :param batch_id: the batch to wait for.
    :param poll_interval: seconds between polls.
    :param cancel_on_kill: cancel the batch when a user kills the deferred task (Airflow 3.3+, which
        calls :meth:`on_kill`; never on triggerer restarts or timeouts).
    :param max_consecutive_errors: transient poll failures in a row (after the hook's own retries)
        tolerated before the trigger gives up.
    :param max_retries: retries per poll inside the hook; small, since the next poll is a retry too.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        batch_id: str,
        poll_interval: float = 60.0,
        cancel_on_kill: bool = False,
        max_consecutive_errors: int = 10,
        max_retries: int = 2,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.conn_id = conn_id
        self.batch_id = batch_id
        self.poll_interval = float(poll_interval)
        self.cancel_on_kill = cancel_on_kill
        self.max_consecutive_errors = max_consecutive_errors
        self.max_retries = max_retries

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "batch_id": self.batch_id,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "max_consecutive_errors": self.max_consecutive_errors,
                "max_retries": self.max_retries,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

        # Keep the idle connection past the next poll: httpx would close it after 5 s, so every poll at the
        # default 60 s interval would open a new TCP connection (and TLS handshake).
        return OpenAIBatchHook(
            self.conn_id, max_retries=self.max_retries, keepalive_expiry=self.poll_interval * 1.1 + 30
        )

    def wait_policy(self) -> WaitPolicy:
        """The part of the task's wait policy the trigger needs (the deferral timeout is Airflow's)."""
        return WaitPolicy(
            poll_interval=self.poll_interval,
            cancel_on_kill=self.cancel_on_kill,
            max_consecutive_errors=self.max_consecutive_errors,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The connection's poller learns this batch's status with every other batch waited on through the same
        # connection, once per interval (the task checked the batch just before deferring: nothing is urgent).
        decision = BatchWaitDecision(self.batch_id, self.wait_policy())
        subscription: Subscription | None = None
        try:
            while True:
                error: Exception | None = None
                try:
                    if subscription is None:
                        subscription = await subscribe(
                            self.conn_id, self.batch_id, poll_interval=self.poll_interval, max_retries=self.max_retries
                        )
                    step = decision.on_batch(await subscription.next())
                except Exception as exc:  # every failure ends in an event the task can explain
                    error = exc
                    step = decision.on_error(exc)
                if isinstance(step, Finished):
                    yield TriggerEvent(  # type: ignore[no-untyped-call]
                        {"status": EVENT_TERMINAL, "batch_id": self.batch_id, "batch": step.batch.to_dict()}
                    )
                    return
                if isinstance(step, GiveUp):
                    yield self._error_event(step, error_type=type(error).__name__)
                    return
                if step.warning:
                    self.log.warning("%s", step.warning)
                if step.log_progress and step.batch is not None:  # a day-long wait logs changes only
                    self.log.info("%s", describe_progress(step.batch))
                # Hold no batch across the wait: kept for an interval, each round's batch of every waiting
                # trigger would outlive the young collections and feed the full ones (10,000 triggers: ~1 a round).
                del step
                if error is not None and subscription is None:  # the next round is the wait otherwise
                    await asyncio.sleep(self.poll_interval)
        finally:
            if subscription is not None:
                subscription.close()

    def _error_event(self, step: GiveUp, *, error_type: str) -> TriggerEvent:
        return TriggerEvent(  # type: ignore[no-untyped-call]
            {
                "status": EVENT_ERROR,
                "batch_id": self.batch_id,
                "message": step.message,
                "error_type": error_type,
                "retryable": step.retryable,
            }
        )

    async def on_kill(self) -> None:
        """Cancel the batch when a user marks the deferred task failed/success or clears it (3.3+).

        Not when this triggerer merely lost the trigger to another one while the task still waits there (see
        :mod:`~airflow_provider_openai_batch.triggers._kill`), and never a batch that ended, which is what
        another copy of this trigger resumes the task on: never cancel what no one asked to cancel.
        """
        if self.cancel_on_kill:
            await cancel_if_killed(self, f"batch {self.batch_id}", self._cancel)

    async def _cancel(self, why: str) -> None:
        await cancel_running(self._hook(), [self.batch_id], why, self.log)
