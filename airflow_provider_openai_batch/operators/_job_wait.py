"""The Job operator's waits: in the worker (``deferrable=False``), polling every running shard batch each
interval; and back from the trigger, the plan and batches its event carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.plan import JobPlan
    from airflow_provider_openai_batch.models import Batch

__all__ = ["poll_in_worker", "resume_from_event"]

#: ``(plan, batches) -> (plan, batches)``: what the job does between polls (admission submits shards).
Between = Callable[["JobPlan", "dict[str, Batch]"], "tuple[JobPlan, dict[str, Batch]]"]


def poll_in_worker(
    plan: JobPlan,
    batches: dict[str, Batch],
    *,
    hook: OpenAIBatchHook,
    log: logging.Logger | Any,
    poll_interval: float,
    timeout: float | None,
    max_consecutive_errors: int,
    done: Callable[[JobPlan, dict[str, Batch]], bool],
    between: Between | None = None,
) -> tuple[JobPlan, dict[str, Batch]]:
    """Poll until ``done``: each shard batch fed to a wait decision of its own, as a single batch's wait.

    :param plan: the job's plan.
    :param batches: its batches as last seen, by id (updated in place).
    :param hook: the task's hook.
    :param log: the task's logger.
    :param poll_interval: seconds between poll rounds.
    :param timeout: seconds to wait at most, ``None``: no limit.
    :param max_consecutive_errors: transient poll failures in a row tolerated per batch.
    :param done: whether nothing is left to wait for.
    :param between: run after each poll round.
    """
    from airflow_provider_openai_batch.job.deadline import job_wake_at
    from airflow_provider_openai_batch.job.verdict import describe_job_progress
    from airflow_provider_openai_batch.wait_decision import BatchWaitDecision, GiveUp, KeepWaiting, WaitPolicy
    from airflow_provider_openai_batch.waiting import raise_give_up

    policy = WaitPolicy(poll_interval=poll_interval, timeout=timeout, max_consecutive_errors=max_consecutive_errors)
    started = time.monotonic()
    decisions: dict[str, BatchWaitDecision] = {}
    while not done(plan, batches):
        wake = job_wake_at(plan, now=time.time())  # a deadline or a back-off may come before the next round
        time.sleep(poll_interval if wake is None else min(poll_interval, max(0.0, wake - time.time())))
        for batch_id in [b for b, batch in batches.items() if not batch.status.is_terminal]:
            decisions.setdefault(batch_id, BatchWaitDecision(batch_id, policy, started_at=started))
            try:
                batches[batch_id] = hook.retrieve_batch(batch_id)
            except Exception as exc:
                step = decisions[batch_id].on_error(exc, now=time.monotonic())
            else:
                step = decisions[batch_id].on_batch(batches[batch_id], now=time.monotonic())
            if isinstance(step, GiveUp):
                raise_give_up(step)
            if isinstance(step, KeepWaiting) and step.warning:
                log.warning("%s", step.warning)
        log.info("%s", describe_job_progress(list(batches.values()), plan.requests))
        if between is not None:
            plan, batches = between(plan, batches)
    return plan, batches


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
