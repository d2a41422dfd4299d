"""Admission of shard batches under the organization's enqueued-token limit per model.

The limit is not exposed by the API, so the job budgets on the client side: a shard batch is submitted only
when its estimated enqueued tokens, added to those of the same model's shard batches still running, stay
within ``max_enqueued_tokens``. The estimate of a shard is its size in bytes as uploaded: every input token
the service counts stands for at least one byte of the request's text, and the line also holds the JSON
around that text, so the byte count is an upper bound on the shard's input tokens (media parts, whose tokens
are not bounded by their bytes, are the exception; see the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.outcome import is_capacity_failure

__all__ = ["MAX_CAPACITY_RETRIES", "admit", "capacity_backoff", "pending", "requeue_capacity_failures"]

#: Resubmissions of one shard batch that failed with ``token_limit_exceeded`` before it counts as failed.
MAX_CAPACITY_RETRIES = 8


def capacity_backoff(poll_interval: float, retries: int) -> float:
    """Seconds before a shard's ``retries``-th resubmission after ``token_limit_exceeded``: doubling, at most 1 h."""
    return float(min(3600.0, max(poll_interval, 1e-3) * 2 ** max(retries - 1, 0)))


def pending(plan: JobPlan) -> list[ShardInfo]:
    """The shards without a batch yet, by index."""
    return [shard for shard in plan.shards if shard.batch_id is None]


def requeue_capacity_failures(
    plan: JobPlan, batches: Mapping[str, Batch], *, now: float, poll_interval: float
) -> tuple[JobPlan, int]:
    """Put back in the queue every input shard whose batch failed only for capacity (and has retries left).

    :returns: the plan and how many shards were put back.
    """
    shards: list[ShardInfo] = []
    requeued = 0
    for shard in plan.shards:
        batch = batches.get(shard.batch_id or "")
        if (
            batch is not None
            and shard.round == 0  # a resubmission round's files are gone after the merge: not put back
            and batch.status is BatchStatus.FAILED
            and is_capacity_failure(batch.errors)
            and shard.capacity_retries < MAX_CAPACITY_RETRIES
        ):
            retries = shard.capacity_retries + 1
            wait = capacity_backoff(poll_interval, retries)
            shard = replace(shard, batch_id=None, reused=False, capacity_retries=retries, not_before=now + wait)
            requeued += 1
        shards.append(shard)
    return plan.with_shards(shards), requeued


def admit(plan: JobPlan, batches: Mapping[str, Batch], *, max_tokens: int, now: float) -> list[ShardInfo]:
    """The pending shards to submit now, in index order, within ``max_tokens`` per model.

    A model's queue is first in, first out: a shard that does not fit holds back that model's later shards,
    so a large shard is never starved by smaller ones. A shard in back-off (``not_before``) waits its turn.
    A shard is admitted when nothing of its model runs, whatever its size (the split keeps shards within
    the budget).
    """
    enqueued: dict[str | None, int] = {}
    for shard in plan.shards:
        batch = batches.get(shard.batch_id or "")
        if batch is not None and not batch.status.is_terminal:
            enqueued[shard.model] = enqueued.get(shard.model, 0) + shard.bytes
    blocked: set[str | None] = set()
    chosen: list[ShardInfo] = []
    for shard in pending(plan):
        if shard.model in blocked:
            continue
        used = enqueued.get(shard.model, 0)
        due = shard.not_before is None or shard.not_before <= now
        if due and (used == 0 or used + shard.bytes <= max_tokens):
            enqueued[shard.model] = used + shard.bytes
            chosen.append(shard)
        else:
            blocked.add(shard.model)
    return chosen
