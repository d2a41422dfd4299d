"""OpenAIBatchJobTrigger: waits for every shard batch of a job in one trigger, without blocking the loop."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.job.verdict import describe_job_progress
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.outcome import PollErrorBudget
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL

__all__ = ["OpenAIBatchJobTrigger"]

log = logging.getLogger(__name__)


class OpenAIBatchJobTrigger(BaseTrigger):
    """Polls every shard batch of a job until all are terminal (or one ``failed``), then fires one event.

    One trigger per job, not one per shard: the task defers once and holds no worker slot. Each poll round
    asks for the batches still running, one after the other, on one kept-alive connection; finished
    batches are not asked again. The event is ``{"status": "terminal", "batches": [...]}`` with every
    batch as last seen, as soon as all are terminal, or at once when one ``failed`` validation (the job
    has failed then; the other shards are left running, since nobody asked to cancel them). The kwargs
    hold only the connection id and batch ids.

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
        # Spread the start of triggers that begin together (a triggerer restart starts all of them at once).
        await asyncio.sleep(random.uniform(0, self.poll_interval))
        hook = self._hook()
        budget = PollErrorBudget(self.max_consecutive_errors)
        loop = asyncio.get_running_loop()
        latest: dict[str, Batch] = {}
        last_progress = ""
        try:
            while True:
                started = loop.time()
                for batch_id in [b for b in self.batch_ids if b not in self._finished]:
                    try:
                        batch = await hook.aretrieve_batch(batch_id)
                    except Exception as exc:  # every failure ends in an event the task can explain
                        if not budget.tolerates(exc):
                            yield self._error_event(batch_id, exc, budget.consecutive > self.max_consecutive_errors)
                            return
                        self.log.warning(
                            "Polling batch %s failed (%d/%d in a row, will retry): %s",
                            batch_id,
                            budget.consecutive,
                            self.max_consecutive_errors,
                            exc,
                        )
                        break  # the rest of this round waits for the next one
                    budget.success()
                    latest[batch_id] = batch
                    if batch.status.is_terminal:
                        self._finished.add(batch_id)
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
                await asyncio.sleep(max(0.0, started + self.poll_interval * random.uniform(0.9, 1.1) - loop.time()))
        finally:
            await hook.aclose()

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
