"""OpenAIBatchJobTrigger: waits for every shard batch of a job in one trigger, without blocking the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.exceptions import OpenAIBatchAPIError
from airflow_provider_openai_batch.job.verdict import describe_job_progress
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.triggers._shared import Subscription, subscribe
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL
from airflow_provider_openai_batch.wait_decision import PollErrorBudget

__all__ = ["OpenAIBatchJobTrigger"]

log = logging.getLogger(__name__)


class OpenAIBatchJobTrigger(BaseTrigger):
    """Polls every shard batch of a job until all are terminal (or one ``failed``), then fires one event.

    One trigger per job, not one per shard: the task defers once and holds no worker slot. Every batch still
    running is waited on through the connection's shared poller (one client and one coalesced round of
    requests per interval in the triggerer, as for ``OpenAIBatchTrigger``); finished batches leave it.
    The event is ``{"status": "terminal", "batches": [...]}`` with every batch as last seen, as soon as all
    are terminal, or at once when one ``failed`` validation (the job has failed then; the other shards are
    left running, since nobody asked to cancel them). The kwargs hold only the connection id, batch ids and
    the plan.

    :param conn_id: Airflow connection id, resolved inside :meth:`run`.
    :param batch_ids: the job's shard batches.
    :param poll_interval: seconds between poll rounds.
    :param cancel_on_kill: cancel every shard batch still running when a user kills the deferred task
        (Airflow 3.3+, which calls :meth:`on_kill`; never on triggerer restarts or timeouts).
    :param max_consecutive_errors: transient poll failures in a row tolerated before giving up.
    :param requests: the job's requests, for the progress line.
    :param plan: the job's plan (shards and line ranges, no rows, no secret), handed back in the event: the
        resumed task needs it, and defer ``kwargs`` do not survive every way of running a task (``dag.test()``).
    :param max_retries: retries per poll inside the hook.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        batch_ids: Sequence[str],
        poll_interval: float = 60.0,
        cancel_on_kill: bool = False,
        max_consecutive_errors: int = 10,
        requests: int | None = None,
        plan: Mapping[str, Any] | None = None,
        max_retries: int = 2,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not batch_ids:
            raise ValueError("a job trigger needs at least one batch id")
        self.conn_id = conn_id
        self.batch_ids = list(batch_ids)
        self.poll_interval = float(poll_interval)
        self.cancel_on_kill = cancel_on_kill
        self.max_consecutive_errors = max_consecutive_errors
        self.requests = requests
        self.plan = dict(plan) if plan is not None else None
        self.max_retries = max_retries
        self._finished: set[str] = set()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "batch_ids": list(self.batch_ids),
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "max_consecutive_errors": self.max_consecutive_errors,
                "requests": self.requests,
                "plan": self.plan,
                "max_retries": self.max_retries,
            },
        )

    def _hook(self) -> Any:
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

        return OpenAIBatchHook(
            self.conn_id, max_retries=self.max_retries, keepalive_expiry=self.poll_interval * 1.1 + 30
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Every shard batch joins the connection's shared poller (one client and one coalesced round of
        # requests per interval for every batch waited on through that connection in this triggerer), so a
        # job of many shards costs the triggerer about what one batch does.
        budget = PollErrorBudget(self.max_consecutive_errors)
        subscriptions: dict[str, Subscription] = {}
        latest: dict[str, Batch] = {}
        last_progress = ""
        try:
            while True:
                pending = [b for b in self.batch_ids if b not in self._finished]
                answers = await asyncio.gather(*(self._next(subscriptions, b) for b in pending))
                failures: list[tuple[str, Exception]] = []
                for batch_id, answer in zip(pending, answers, strict=True):
                    if isinstance(answer, Exception):
                        failures.append((batch_id, answer))
                        continue
                    latest[batch_id] = answer
                    if answer.status.is_terminal:
                        self._finished.add(batch_id)
                        subscriptions.pop(batch_id).close()
                if failures:
                    # A round with failures counts once against the budget; a permanent one ends the wait.
                    batch_id, exc = next(((b, e) for b, e in failures if not _transient(e)), failures[0])
                    if not budget.tolerates(exc):
                        yield self._error_event(batch_id, exc, budget.consecutive > self.max_consecutive_errors)
                        return
                    self.log.warning(
                        "Polling %d of the job's batches failed (%d/%d rounds in a row, will retry): %s",
                        len(failures),
                        budget.consecutive,
                        self.max_consecutive_errors,
                        exc,
                    )
                    if any(b not in subscriptions for b, _ in failures):  # no round to wait for: wait here
                        await asyncio.sleep(self.poll_interval)
                else:
                    budget.success()
                if latest:
                    progress = describe_job_progress(list(latest.values()), self.requests)
                    if progress != last_progress:
                        self.log.info("%s", progress)
                        last_progress = progress
                failed = any(batch.status is BatchStatus.FAILED for batch in latest.values())
                if failed or len(self._finished) == len(self.batch_ids):
                    batches = [b.to_dict() for b in latest.values()]
                    payload = {"status": EVENT_TERMINAL, "batches": batches, "plan": self.plan}
                    yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
                    return
        finally:
            for subscription in subscriptions.values():
                subscription.close()

    async def _next(self, subscriptions: dict[str, Subscription], batch_id: str) -> Batch | Exception:
        """The batch as the poller's next round reports it, or the error that ended the request for it."""
        try:
            if batch_id not in subscriptions:
                subscriptions[batch_id] = await subscribe(
                    self.conn_id, batch_id, poll_interval=self.poll_interval, max_retries=self.max_retries
                )
            return await subscriptions[batch_id].next()
        except Exception as exc:
            return exc

    def _error_event(self, batch_id: str, exc: Exception, retryable: bool) -> TriggerEvent:
        gave_up = " after too many consecutive transient failures" if retryable else ""
        return TriggerEvent(  # type: ignore[no-untyped-call]
            {
                "status": EVENT_ERROR,
                "batch_id": batch_id,
                "message": f"Stopped waiting for the job's batch {batch_id}{gave_up}: {exc}",
                "error_type": type(exc).__name__,
                "retryable": retryable,
            }
        )

    async def on_kill(self) -> None:
        """Cancel every shard batch not known to be finished when a user kills the deferred task (3.3+)."""
        if not self.cancel_on_kill:
            return
        hook = self._hook()
        try:
            for batch_id in self.batch_ids:
                if batch_id in self._finished:
                    continue
                try:
                    batch = await hook.acancel_batch(batch_id)
                    self.log.info(
                        "Task was killed: cancel requested for batch %s, now %s", batch_id, batch.status.value
                    )
                except Exception as exc:
                    self.log.warning("Task was killed but cancelling batch %s failed: %s", batch_id, exc)
        finally:
            await hook.aclose()


def _transient(exc: Exception) -> bool:
    return isinstance(exc, OpenAIBatchAPIError) and exc.retryable
