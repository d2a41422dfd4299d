"""A job's deadline: when it is, and what the job must do once it has passed (pure: no Airflow, no HTTP).

``deadline`` is either a moment (an aware ``datetime``, or an ISO-8601 date-time string with its offset) or a
duration (a ``timedelta``, seconds, or an ISO-8601 duration such as ``PT2H30M``) counted from the DAG run's
start. The run's start is the same instant in every try of the task, after every deferral and in the
triggerer, so a retry never extends the deadline (the task's own start date is new with each try). Clearing a
finished run gives it a new start, and so a new deadline. The moment is resolved once, when the job starts,
and carried in its plan (:class:`~airflow_provider_openai_batch.job.plan.JobDeadline`).

Once the deadline has passed with work unfinished, nothing more is submitted (no shard waiting for capacity,
no resubmission round), and every batch of the job still running is cancelled (the job's own, never
another's). ``on_deadline="fail"`` then fails at once with the counts; ``"partial"`` waits until each
cancelled batch is terminal (through ``cancelling``), merges what exists, and lets the job's verdict policy
decide, the unrun lines in the error file as ``deadline_exceeded``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_openai_batch.idempotency import epoch_seconds
from airflow_provider_openai_batch.job.merge import Overdue
from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan
from airflow_provider_openai_batch.models import Batch, BatchStatus

__all__ = [
    "ON_DEADLINE",
    "DeadlineStep",
    "accepted_at_deadline",
    "check_on_deadline",
    "deadline_anchor",
    "deadline_report",
    "deadline_step",
    "describe_deadline",
    "job_wake_at",
    "mark_hit",
    "overdue",
    "parse_deadline",
    "past_deadline",
    "resolve_deadline",
]

#: What a job does at its deadline.
ON_DEADLINE = ("fail", "partial")

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)


#: ``str(timedelta)``, as ``"{{ macros.timedelta(hours=6) }}"`` renders: ``[D day[s], ]H:MM:SS[.ffffff]``.
_TIMEDELTA_TEXT = re.compile(r"(?:(?P<days>\d+) days?, )?(?P<hours>\d+):(?P<minutes>\d\d):(?P<seconds>\d\d(?:\.\d+)?)")


def check_on_deadline(value: object) -> str:
    """``value`` if it is one of :data:`ON_DEADLINE`, else a ``ValueError`` naming the choices."""
    if value not in ON_DEADLINE:
        raise ValueError(f"on_deadline must be one of {', '.join(map(repr, ON_DEADLINE))}, got {value!r}")
    return str(value)


def _seconds(value: float, given: object) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"deadline: a duration must be positive, got {given!r}")
    return float(value)


def _aware(moment: datetime, given: object) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"deadline {given!r} has no time zone: give its offset (e.g. +00:00), since a bare time could be read "
            "in more than one zone"
        )
    return moment


def _iso_duration(text: str) -> float | None:
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groupdict().values()) or text.upper().endswith("T"):
        return None
    parts = {name: float(value) for name, value in match.groupdict().items() if value is not None}
    return timedelta(**parts).total_seconds()


def parse_deadline(value: object) -> datetime | float | None:
    """The deadline as given (after rendering): an aware moment, a duration in seconds, or ``None`` for none.

    :param value: ``None`` or ``""`` (no deadline); a ``datetime`` with a time zone; a ``timedelta``; a number of
        seconds; or a string: a number of seconds, an ISO-8601 duration (``PT90M``, ``P1DT2H``; years and months
        are refused, having no fixed length), a rendered ``timedelta`` (``"1 day, 2:00:00"``) or an ISO-8601
        date-time with its offset.
    :raises ValueError: for anything else, naming the problem.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"deadline must be a datetime, a duration or seconds, got {value!r}")
    if isinstance(value, datetime):
        return _aware(value, value)
    if isinstance(value, timedelta):
        return _seconds(value.total_seconds(), value)
    if isinstance(value, (int, float)):
        return _seconds(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"deadline must be a datetime, a duration or seconds, got {type(value).__name__}")
    text = value.strip()
    if not text or text == "None":  # an optional template that rendered nothing
        return None
    try:
        return _seconds(float(text), value)
    except ValueError as exc:
        if "positive" in str(exc):
            raise
    clock = _TIMEDELTA_TEXT.fullmatch(text)
    if clock is not None:
        parts = {name: float(value) for name, value in clock.groupdict().items() if value is not None}
        return _seconds(timedelta(**parts).total_seconds(), value)
    if text[:1] in "Pp":
        if re.fullmatch(r"P(?:\d+(?:\.\d+)?[YM])+.*", text, re.IGNORECASE):
            raise ValueError(f"deadline {value!r}: years and months have no fixed length; give weeks, days or hours")
        seconds = _iso_duration(text)
        if seconds is None:
            raise ValueError(f"deadline {value!r} is not an ISO-8601 duration such as PT2H or P1DT30M")
        return _seconds(seconds, value)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise ValueError(
            f"deadline {value!r} is neither a date-time (ISO 8601, with its offset), an ISO-8601 duration (PT2H) "
            "nor seconds"
        ) from None
    return _aware(moment, value)


def deadline_anchor(context: Mapping[str, Any], now: float | None = None) -> float:
    """What a duration counts from: the DAG run's start (epoch seconds); ``now`` when the context has none."""
    start = epoch_seconds(getattr(context.get("dag_run"), "start_date", None))
    return start if start is not None else (time.time() if now is None else now)


def resolve_deadline(value: object, *, anchor: float) -> float | None:
    """The deadline as epoch seconds (``None`` for none): a moment as is, a duration from ``anchor``."""
    parsed = parse_deadline(value)
    if parsed is None:
        return None
    if isinstance(parsed, datetime):
        return parsed.timestamp()
    return anchor + parsed


def describe_deadline(at: float) -> str:
    return datetime.fromtimestamp(at, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DeadlineStep:
    """What the job must do now that its deadline has passed with work unfinished.

    :param cancel: the job's batches to cancel now (running, not yet asked).
    :param running: the job's batches not terminal yet (``cancelling`` ones included): ``partial`` waits for them.
    :param not_submitted: shards never submitted (waiting for capacity): they are given up.
    """

    cancel: tuple[str, ...]
    running: tuple[str, ...]
    not_submitted: int


def deadline_step(plan: JobPlan, batches: Mapping[str, Batch], *, now: float) -> DeadlineStep | None:
    """``None`` while the deadline has not passed (or there is none, or nothing is left unfinished)."""
    deadline = plan.deadline
    if deadline is None or (now < deadline.at and not deadline.hit):
        return None
    running = tuple(
        shard.batch_id
        for shard in plan.shards
        if shard.batch_id and shard.batch_id in batches and not batches[shard.batch_id].status.is_terminal
    )
    not_submitted = sum(1 for shard in plan.shards if shard.batch_id is None)
    if not running and not not_submitted:
        return None
    cancel = tuple(
        b for b in running if b not in deadline.cancelled and batches[b].status is not BatchStatus.CANCELLING
    )
    return DeadlineStep(cancel=cancel, running=running, not_submitted=not_submitted)


def mark_hit(plan: JobPlan, *, now: float, cancelled: tuple[str, ...]) -> JobPlan:
    """The plan with its deadline hit (at the first call), ``cancelled`` added to the batches it cancelled, and
    ``now`` as the last round of cancels."""
    deadline = plan.deadline
    assert deadline is not None
    known = deadline.cancelled + tuple(b for b in cancelled if b not in deadline.cancelled)
    hit_at = deadline.hit_at if deadline.hit_at is not None else now
    return replace(plan, deadline=replace(deadline, hit_at=hit_at, cancelled=known, tried_at=now))


def accepted_at_deadline(plan: JobPlan) -> tuple[str, ...] | None:
    """The batches cancelled at a hit deadline that the verdict accepts as partial (``on_deadline="partial"``)."""
    deadline = plan.deadline
    if deadline is None or not deadline.hit or deadline.on_deadline != "partial":
        return None
    return deadline.cancelled


def past_deadline(plan: JobPlan, *, now: float, log: Any = None) -> bool:
    """Whether the deadline has passed: then no resubmission round starts (its lines keep their own errors)."""
    past = plan.deadline is not None and (plan.deadline.hit or now >= plan.deadline.at)
    if past and log is not None:
        log.warning("The job's deadline has passed: no further resubmission round is submitted")
    return past


def job_wake_at(
    plan: JobPlan, *, now: float, batches: Mapping[str, Batch] | None = None, retry_after: float = 60.0
) -> float | None:
    """When a job that waits must wake even if no batch ends: a back-off ends, the deadline comes, or (past a
    hit deadline, given ``batches``) ``retry_after`` seconds from ``now`` to try a cancel that failed again.

    Only moments still ahead count (a back-off already over waits for capacity, woken when a batch ends).
    """
    moments = [s.not_before for s in plan.shards if s.batch_id is None and s.not_before is not None]
    deadline = plan.deadline
    if deadline is not None and not deadline.hit:
        moments.append(deadline.at)
    if deadline is not None and deadline.hit and batches is not None:
        step = deadline_step(plan, batches, now=now)
        if step is not None and step.cancel:
            moments.append(now + retry_after)
    ahead = [moment for moment in moments if moment > now]
    return min(ahead) if ahead else None


def overdue(plan: JobPlan) -> Overdue | None:
    """The lines the deadline left unrun (for the merge), ``None`` when it was not hit."""
    deadline = plan.deadline
    if deadline is None or not deadline.hit:
        return None
    cancelled = set(deadline.cancelled)
    ranges = [(s.first_line, s.last_line) for s in plan.shards if s.batch_id is None or s.batch_id in cancelled]
    return Overdue(ranges, f"not run by the job's deadline {describe_deadline(deadline.at)}")


def deadline_report(deadline: JobDeadline, plan: JobPlan, lines: int | None) -> dict[str, Any]:
    """The manifest's ``deadline`` entry."""
    skipped = [s for s in plan.shards if s.batch_id is None]
    return {
        "at": describe_deadline(deadline.at),
        "on_deadline": deadline.on_deadline,
        "hit": deadline.hit,
        "hit_at": describe_deadline(deadline.hit_at) if deadline.hit_at is not None else None,
        "cancelled": list(deadline.cancelled),
        "not_submitted": {"shards": len(skipped), "requests": sum(s.requests for s in skipped)},
        "lines": lines,
    }
