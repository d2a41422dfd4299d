"""The Job operator's waits: in the worker (``deferrable=False``), polling the batches the job decision waits
on each interval; and back from the trigger, the plan and batches its event carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.decide import Wait
    from airflow_provider_openai_batch.job.plan import JobPlan
    from airflow_provider_openai_batch.models import Batch

__all__ = ["poll_until", "resume_from_event"]


def poll_until(
    step: Wait,
    batches: dict[str, Batch],
    *,
    hook: OpenAIBatchHook,
    log: logging.Logger | Any,
    poll_interval: float,
    max_consecutive_errors: int,
    requests: int,
    timeout: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll the batches ``step`` names until it says to wake: one ended (``wake_on_finish``), all ended, one
    failed, or ``step.until`` came. Each batch has a wait decision of its own, as a single batch's wait.

    :param step: what to wait for (from the job decision).
    :param batches: the job's batches as last seen, by id (updated in place).
    :param hook: the task's hook.
    :param log: the task's logger.
    :param poll_interval: seconds between poll rounds.
    :param max_consecutive_errors: transient poll failures in a row tolerated per batch.
    :param requests: the job's requests, for the progress line.
    :param timeout: seconds this wait may last (``wait_timeout``), ``None``: no limit.
    :param clock: epoch seconds now.
    :param sleep: waits between rounds.
    :raises AirflowException: a transient failure outlasted the budget, or the wait timed out (retried).
    :raises AirflowFailException: a poll failed for good.
    """
    from airflow_provider_openai_batch.job.verdict import describe_job_progress
    from airflow_provider_openai_batch.models import BatchStatus
    from airflow_provider_openai_batch.wait_decision import BatchWaitDecision, GiveUp, KeepWaiting, WaitPolicy
    from airflow_provider_openai_batch.waiting import raise_give_up

    policy = WaitPolicy(poll_interval=poll_interval, timeout=timeout, max_consecutive_errors=max_consecutive_errors)
    started = clock()
    decisions = {b: BatchWaitDecision(b, policy, started_at=started) for b in step.batch_ids}
    if not step.batch_ids and step.until is None:  # nothing to wait for (the decision never asks this)
        return
    while True:
        now = clock()
        if step.until is not None and now >= step.until:
            return
        sleep(poll_interval if step.until is None else min(poll_interval, max(0.0, step.until - now)))
        running = [b for b in step.batch_ids if b not in batches or not batches[b].status.is_terminal]
        for batch_id in running:
            try:
                batches[batch_id] = hook.retrieve_batch(batch_id)
            except Exception as exc:
                decided = decisions[batch_id].on_error(exc, now=clock())
            else:
                decided = decisions[batch_id].on_batch(batches[batch_id], now=clock())
            if isinstance(decided, GiveUp):
                raise_give_up(decided)
            if isinstance(decided, KeepWaiting) and decided.warning:
                log.warning("%s", decided.warning)
        if step.batch_ids:
            log.info("%s", describe_job_progress([batches[b] for b in step.batch_ids if b in batches], requests))
        ended = [b for b in step.batch_ids if b in batches and batches[b].status.is_terminal]
        if (
            len(ended) == len(step.batch_ids) > 0
            or (step.wake_on_finish and ended)
            or any(batches[b].status is BatchStatus.FAILED for b in ended)
        ):
            return


def resume_from_event(event: Any, *, retrieve: Callable[[str], Batch]) -> tuple[JobPlan, dict[str, Batch]]:
    """The plan and every batch after the job trigger fired (a batch the event lacks is retrieved).

    :raises AirflowException: the trigger gave up for a passing reason, or sent something unexpected (retried).
    :raises AirflowFailException: the trigger gave up for good.
    """
    from airflow_provider_openai_batch.job.plan import JobPlan
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.triggers.batch import EVENT_ERROR, EVENT_TERMINAL

    if not isinstance(event, dict) or event.get("status") not in (EVENT_TERMINAL, EVENT_ERROR):
        raise AirflowException(f"Unexpected trigger event: {str(event)[:500]}")
    if event["status"] == EVENT_ERROR:
        message = str(event.get("message") or "the trigger stopped without a message")
        raise (AirflowException if event.get("retryable") else AirflowFailException)(message)
    if not isinstance(event.get("plan"), dict):
        raise AirflowException("The trigger event carries no job plan")
    plan = JobPlan.from_dict(event["plan"])
    batches = {batch.id: batch for batch in (Batch.from_dict(item) for item in event.get("batches") or [])}
    for batch_id in plan.batch_ids:
        if batch_id not in batches:
            batches[batch_id] = retrieve(batch_id)
    return plan, batches
