"""OpenAIBatchJobTrigger: waits for every shard batch of a job in one trigger, without blocking the loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.job.verdict import describe_job_progress
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.triggers._kill import cancel_if_killed, cancel_running
from airflow_provider_openai_batch.triggers._shared import Subscription, subscribe
from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL
from airflow_provider_openai_batch.wait_decision import BatchWaitDecision, Finished, GiveUp, WaitPolicy

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
    :param wake_on_finish: fire as soon as one batch ends (the job's admission then submits shards that waited
        for capacity), with every batch as last seen.
    :param wake_at: epoch seconds at which to fire even if no batch ended (a shard's back-off is over, or the
        job's deadline comes: checked after each poll round, so within one interval); ``batch_ids`` may then
        be empty.
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
        wake_on_finish: bool = False,
        wake_at: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not batch_ids and wake_at is None:
            raise ValueError("a job trigger needs at least one batch id or a time to wake at")
        self.conn_id = conn_id
        self.batch_ids = list(batch_ids)
        self.poll_interval = float(poll_interval)
        self.cancel_on_kill = cancel_on_kill
        self.max_consecutive_errors = max_consecutive_errors
        self.requests = requests
        self.plan = dict(plan) if plan is not None else None
        self.max_retries = max_retries
        self.wake_on_finish = wake_on_finish
        self.wake_at = wake_at
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
                "wake_on_finish": self.wake_on_finish,
                "wake_at": self.wake_at,
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
        # job of many shards costs the triggerer about what one batch does. Each shard has its own wait
        # decision, as a single batch's trigger does: its error budget, warnings and verdict.
        policy = WaitPolicy(poll_interval=self.poll_interval, max_consecutive_errors=self.max_consecutive_errors)
        decisions = {batch_id: BatchWaitDecision(batch_id, policy) for batch_id in self.batch_ids}
        subscriptions: dict[str, Subscription] = {}
        latest: dict[str, Batch] = {}
        try:
            while True:
                pending = [b for b in self.batch_ids if b not in self._finished]
                if not pending and self.wake_at is not None:  # only a back-off to wait out
                    await asyncio.sleep(max(0.0, self.wake_at - time.time()))
                    yield self._terminal(latest)
                    return
                answers = await asyncio.gather(*(self._next(subscriptions, b) for b in pending))
                changed = False
                for batch_id, answer in zip(pending, answers, strict=True):
                    decision = decisions[batch_id]
                    if isinstance(answer, Exception):
                        step = decision.on_error(answer)
                    else:
                        latest[batch_id] = answer
                        step = decision.on_batch(answer)
                    if isinstance(step, GiveUp):
                        yield self._error_event(batch_id, step)
                        return
                    if isinstance(step, Finished):
                        self._finished.add(batch_id)
                        subscriptions.pop(batch_id).close()
                        changed = True
                    else:
                        changed = changed or step.log_progress
                        if step.warning:
                            self.log.warning("%s", step.warning)
                        if step.batch is None and batch_id not in subscriptions:  # no round to wait for
                            await asyncio.sleep(self.poll_interval)
                if changed and latest:
                    self.log.info("%s", describe_job_progress(list(latest.values()), self.requests))
                failed = any(batch.status is BatchStatus.FAILED for batch in latest.values())
                if self._fires(finished=len(self._finished), failed=failed, now=time.time()):
                    yield self._terminal(latest)
                    return
        finally:
            for subscription in subscriptions.values():
                subscription.close()

    def _fires(self, *, finished: int, failed: bool, now: float) -> bool:
        """Whether the trigger fires, its batches as they are: all ended, one failed, or a wake-up is due.

        :param finished: batches known to have ended.
        :param failed: whether one of them ``failed``.
        :param now: epoch seconds.
        """
        woken = (self.wake_on_finish and finished > 0) or (self.wake_at is not None and now >= self.wake_at)
        return failed or woken or finished == len(self.batch_ids)

    async def _may_have_fired(self) -> bool:
        """Whether the trigger's condition to fire holds now, its unfinished batches read from the service (until
        it does). Then another copy of it (on another triggerer) may have fired: the task resumed in the same try,
        and runs or ended on its own.
        """
        ended, failed = len(self._finished), False
        if self._fires(finished=ended, failed=failed, now=time.time()):
            return True
        hook = self._hook()
        try:
            for batch_id in [b for b in self.batch_ids if b not in self._finished]:
                status = (await hook.aretrieve_batch(batch_id)).status
                if status.is_terminal:
                    ended, failed = ended + 1, failed or status is BatchStatus.FAILED
                    if self._fires(finished=ended, failed=failed, now=time.time()):
                        return True
        finally:
            await hook.aclose()
        return False

    def _terminal(self, latest: Mapping[str, Batch]) -> TriggerEvent:
        batches = [b.to_dict() for b in latest.values()]
        payload = {"status": EVENT_TERMINAL, "batches": batches, "plan": self.plan}
        return TriggerEvent(payload)  # type: ignore[no-untyped-call]

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

    def _error_event(self, batch_id: str, step: GiveUp) -> TriggerEvent:
        return TriggerEvent(  # type: ignore[no-untyped-call]
            {
                "status": EVENT_ERROR,
                "batch_id": batch_id,
                "message": f"{step.message} (a shard batch of the job)",
                "retryable": step.retryable,
            }
        )

    async def on_kill(self) -> None:
        """Cancel every shard batch not known to be finished when a user kills the deferred task (3.3+).

        Not when this triggerer merely lost the trigger to another one while the task still waits there, nor
        when the task resumed (and runs, or ended on its own) after a wake-up another copy of this trigger may
        have fired: a shard ended or failed, or ``wake_at`` passed (see
        :mod:`~airflow_provider_openai_batch.triggers._kill`).
        """
        if self.cancel_on_kill:
            await cancel_if_killed(
                self,
                f"the {len(self.batch_ids)} shard batches of a job",
                self._cancel_unfinished,
                may_have_fired=self._may_have_fired,
            )

    async def _cancel_unfinished(self, why: str) -> None:
        unfinished = [batch_id for batch_id in self.batch_ids if batch_id not in self._finished]
        await cancel_running(self._hook(), unfinished, why, self.log)
