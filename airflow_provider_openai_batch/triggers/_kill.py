"""Telling a user's kill from a resume of the same try, for every trigger that cancels on kill.

Airflow 3.3 calls a trigger's ``on_kill`` when a user marks its deferred task failed or success or clears it,
and on the same path when this triggerer lost the trigger to another one (missed heartbeats, HA pairs,
rolling restarts). The other copy may have fired meanwhile (a batch ended, a shard ended under admission, a
back-off or deadline came): the task then resumed in the same try, and may even have ended on its own. So
``on_kill`` reads the task instance now and :func:`~airflow_provider_openai_batch.wait_decision.judge_kill`
decides:

* cleared (``None``), ``skipped``/``upstream_failed``/``removed``, or a new try number: killed;
* still deferred (here or again), up for retry, or resumed in the same try: not a kill;
* ``failed``/``success`` are what a user's mark leaves, and also what a resumed task leaves when it ends on its
  own (a job fails on a failed shard and leaves the other shards for a retry to reuse); ``scheduled``,
  ``queued`` and ``running`` are a resume, or a clear the scheduler already re-queued in a new try. A user acts
  on the task while it waits here, when this trigger's own condition to fire does not hold (or it would have
  fired, within one poll); a resume needs a copy that fired, when it does hold, and it still does (batches do
  not leave a terminal status, a wake-up time stays past). So these are a kill unless that condition holds
  now, read from the service (``may_have_fired``). A trigger without such a check (one batch) cancels, and its
  cancel skips a batch that ended: its one condition to fire but giving up on poll errors.

The try number now would tell a re-queued clear from a resume at once, but a triggerer cannot read it on
Airflow 3.1 to 3.3: the task-state request answers states only, and ``GetPreviousTI``'s answer is not among the
messages the trigger runner accepts. :class:`TaskNow` carries it for when one can. A state that cannot be read
cancels nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch.models import BatchStatus
from airflow_provider_openai_batch.wait_decision import KillVerdict, judge_kill

__all__ = ["STATE_LOOKUP_TIMEOUT", "TaskNow", "cancel_if_killed", "cancel_running", "read_task_now"]

#: Seconds ``on_kill`` waits for the task instance's state before it leaves the batches alone.
STATE_LOOKUP_TIMEOUT = 60.0
#: The on_kill work in flight (a reference keeps a shielded task from being garbage-collected).
_SHIELDED: set[asyncio.Future[None]] = set()


@dataclass(frozen=True)
class TaskNow:
    """A task instance as the API server reports it now.

    :param state: its state (``"None"`` once cleared), ``None`` when it could not be read.
    :param try_number: its try number, ``None`` when it could not be read (no triggerer can, on Airflow 3.1-3.3).
    :param problem: why something could not be read, for the log.
    """

    state: str | None
    try_number: int | None = None
    problem: str | None = None


async def cancel_if_killed(
    trigger: Any,
    what: str,
    cancel: Callable[[str], Awaitable[None]],
    *,
    may_have_fired: Callable[[], Awaitable[bool]] | None = None,
    read: Callable[[Any], Awaitable[TaskNow]] | None = None,
) -> None:
    """Run ``cancel(why)`` only when ``trigger``'s task instance was really killed; warn and do nothing otherwise.

    Reading the task can outlast the triggerer's next round, which cancels a running ``on_kill`` again: the
    check and the cancel run shielded, and finish on their own.

    :param trigger: the trigger whose ``on_kill`` runs (its ``task_instance`` is read, when it has one).
    :param what: what would be cancelled, for the log line (e.g. ``"batch batch_abc"``).
    :param cancel: the cancelling coroutine, given why the task counts as killed.
    :param may_have_fired: whether the trigger's own condition to fire holds now (so another copy of it may
        have woken the task, which then ended on its own); ``None``: the trigger has no such check.
    :param read: reads the task instance now (default :func:`read_task_now`; tests inject one).
    """
    work = asyncio.ensure_future(_check_then_cancel(trigger, what, cancel, may_have_fired, read or read_task_now))
    _SHIELDED.add(work)
    work.add_done_callback(_SHIELDED.discard)
    await asyncio.shield(work)


async def _check_then_cancel(
    trigger: Any,
    what: str,
    cancel: Callable[[str], Awaitable[None]],
    may_have_fired: Callable[[], Awaitable[bool]] | None,
    read: Callable[[Any], Awaitable[TaskNow]],
) -> None:
    deferred_try = _deferred_try(trigger)
    try:
        now = await read(trigger)
    except Exception as exc:
        now = TaskNow(None, problem=f"{type(exc).__name__}: {exc}")
    verdict = judge_kill(state=now.state, try_number=now.try_number, deferred_try=deferred_try)
    why = _describe(now, deferred_try)
    if verdict is KillVerdict.KILLED_UNLESS_WOKEN and may_have_fired is not None:
        try:
            fired, woke = await may_have_fired(), "another copy of this trigger may have fired and woken it"
        except Exception as exc:  # cannot tell: never cancel what no one may have asked to cancel
            fired, woke = True, f"whether another copy woke it could not be read ({type(exc).__name__}: {exc})"
        if fired:
            verdict, why = KillVerdict.NOT_KILLED, f"{why}; {woke}"
    if verdict is KillVerdict.NOT_KILLED:
        trigger.log.warning(
            "Trigger for %s stopped here, but %s: not cancelling (only a clear, a new try or a user's mark is a "
            "kill; a resume of the same try from another triggerer's copy is not)",
            what,
            why,
        )
        return
    await cancel(why)


def _describe(now: TaskNow, deferred_try: int | None) -> str:
    """Why the task counts as killed or not, for the log."""
    if now.state is None:
        return f"its task's state could not be read ({now.problem or 'no task instance'})"
    tries = "try number unknown" if now.try_number is None else f"try {now.try_number}"
    return f"its task is {now.state} ({tries}; deferred in try {deferred_try})"


def _deferred_try(trigger: Any) -> int | None:
    """The try number the trigger was deferred under: Airflow hands the trigger its task instance."""
    number = getattr(getattr(trigger, "task_instance", None), "try_number", None)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


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


async def read_task_now(trigger: Any) -> TaskNow:
    """The state of the task instance deferred on ``trigger``, read now through the Task SDK (no try number).

    Read in its own thread (not asgiref's one shared thread, which other sync calls may hold), and bounded by
    :data:`STATE_LOOKUP_TIMEOUT`: on SQLite the triggerer can take ~25 s to answer. A failed read raises.

    :param trigger: the trigger; a :class:`TaskNow` of nothing when it runs without a task instance.
    """
    ti = getattr(trigger, "task_instance", None)
    if ti is None:
        return TaskNow(None, problem="the trigger runs without a task instance")
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from asgiref.sync import sync_to_async

    map_index = ti.map_index if ti.map_index is not None else -1
    lookup = sync_to_async(RuntimeTaskInstance.get_task_states, thread_sensitive=False)(
        dag_id=ti.dag_id,
        task_ids=[ti.task_id],
        run_ids=[ti.run_id],
        map_index=map_index if map_index >= 0 else None,
    )
    states = await asyncio.wait_for(lookup, timeout=STATE_LOOKUP_TIMEOUT)
    key = ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"
    in_run = states.get(ti.run_id, {})
    if key not in in_run:
        return TaskNow(None, problem="the task instance was not found")
    return TaskNow(str(in_run[key]))
