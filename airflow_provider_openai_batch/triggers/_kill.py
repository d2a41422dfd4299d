"""Telling a user's kill from a trigger that moved, for every trigger that cancels on kill.

Airflow 3.3 calls a trigger's ``on_kill`` when a user marks its deferred task failed or success or clears it,
and on the same path when this triggerer lost the trigger to another one (missed heartbeats, HA pairs,
rolling restarts) while the task still waits there. Only the first may cancel anything, so a trigger asks the
task instance's state first (:func:`~airflow_provider_openai_batch.wait_decision.killed_by_user` decides) and
leaves its batches running when the state cannot be told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from airflow_provider_openai_batch.models import BatchStatus
from airflow_provider_openai_batch.wait_decision import killed_by_user

__all__ = ["STATE_LOOKUP_TIMEOUT", "cancel_if_killed", "cancel_running"]

#: Seconds ``on_kill`` waits for the task instance's state before it leaves the batches alone.
STATE_LOOKUP_TIMEOUT = 60.0
#: The on_kill work in flight (a reference keeps a shielded task from being garbage-collected).
_SHIELDED: set[asyncio.Future[None]] = set()


async def cancel_if_killed(trigger: Any, what: str, cancel: Callable[[str], Awaitable[None]]) -> None:
    """Run ``cancel(why)`` only when ``trigger``'s task instance was really killed; warn and do nothing otherwise.

    Reading the task's state can outlast the triggerer's next round, which cancels a running ``on_kill``
    again: the check and the cancel run shielded, and finish on their own.

    :param trigger: the trigger whose ``on_kill`` runs (its ``task_instance`` is read, when it has one).
    :param what: what would be cancelled, for the log line (e.g. ``"batch batch_abc"``).
    :param cancel: the cancelling coroutine, given why the task counts as killed.
    """
    work = asyncio.ensure_future(_check_then_cancel(trigger, what, cancel))
    _SHIELDED.add(work)
    work.add_done_callback(_SHIELDED.discard)
    await asyncio.shield(work)


async def _check_then_cancel(trigger: Any, what: str, cancel: Callable[[str], Awaitable[None]]) -> None:
    try:
        state = await _task_state(trigger)
    except Exception as exc:
        state, why = None, f"its task's state could not be read ({type(exc).__name__}: {exc})"
    else:
        why = "its task's state is unknown" if state is None else f"its task is {state}"
    if not killed_by_user(state):
        trigger.log.warning(
            "Trigger for %s stopped here, but %s: not cancelling (a trigger that moved to another triggerer is "
            "not a kill)",
            what,
            why,
        )
        return
    await cancel(why)


async def cancel_running(hook: Any, batch_ids: Iterable[str], why: str, log: Any) -> None:
    """Cancel each of ``batch_ids`` that is still running, reading it first; then close ``hook``.

    A batch that ended (or is being cancelled) is left alone: it needs no cancel, and a trigger that moved to
    another triggerer may only now run ``on_kill`` because the other copy saw that batch end and the task
    finished with it (its state then reads like a kill).

    :param hook: the trigger's own hook (closed here).
    :param batch_ids: the batches the killed task was waiting on.
    :param why: why the task counts as killed, for the log.
    :param log: the trigger's logger.
    """
    try:
        for batch_id in batch_ids:
            try:
                batch = await hook.aretrieve_batch(batch_id)
                if batch.status.is_terminal or batch.status is BatchStatus.CANCELLING:
                    log.info(
                        "Task was killed (%s) but batch %s is %s already: nothing to cancel",
                        why,
                        batch_id,
                        batch.status.value,
                    )
                    continue
                batch = await hook.acancel_batch(batch_id)
                log.info(
                    "Task was killed (%s): cancel requested for batch %s, now %s", why, batch_id, batch.status.value
                )
            except Exception as exc:
                log.warning("Task was killed but cancelling batch %s failed: %s", batch_id, exc)
    finally:
        await hook.aclose()


async def _task_state(trigger: Any) -> str | None:
    """The state of the task instance deferred on ``trigger``, read now through the triggerer's API client.

    ``None`` when the trigger runs without a task instance (outside a triggerer).
    """
    ti = getattr(trigger, "task_instance", None)
    if ti is None:
        return None
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from asgiref.sync import sync_to_async

    map_index = ti.map_index if ti.map_index is not None else -1
    # In its own thread (not asgiref's one shared thread, which other sync calls may hold), and bounded: on
    # SQLite the triggerer can take ~25 s to answer.
    lookup = sync_to_async(RuntimeTaskInstance.get_task_states, thread_sensitive=False)(
        dag_id=ti.dag_id,
        task_ids=[ti.task_id],
        run_ids=[ti.run_id],
        map_index=map_index if map_index >= 0 else None,
    )
    states = await asyncio.wait_for(lookup, timeout=STATE_LOOKUP_TIMEOUT)
    key = ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"
    state = states.get(ti.run_id, {}).get(key)
    return None if state is None and key not in states.get(ti.run_id, {}) else str(state)
