"""Admission of shard batches under the organization's enqueued limits per model: tokens and requests.

The limits are not exposed by the API, so the job budgets on the client side: a shard batch is submitted only
when its estimated enqueued tokens and its requests, added to those of the same model's shard batches still
running, stay within ``max_enqueued_tokens`` and ``max_enqueued_requests`` (see
:class:`~airflow_provider_openai_batch.capacity.EnqueuedLimits`). Shards of every round count alike: those of
the input and those of a resubmission of failed lines. A shard's request count is exact. The estimate of its
tokens is its size in bytes as uploaded: every input token the service counts stands for at least one byte of
the request's text, and the line also holds the JSON around that text, so the byte count is an upper bound on
the shard's input tokens (media parts, whose tokens are not bounded by their bytes, are the exception; see the
README).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from airflow_provider_openai_batch.capacity import EnqueuedLimits
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.models import Batch, BatchStatus
from airflow_provider_openai_batch.outcome import is_capacity_failure

__all__ = ["MAX_CAPACITY_RETRIES", "admit", "capacity_backoff", "pending", "requeue_capacity_failures"]

#: Resubmissions of one shard batch that failed for capacity (``token_limit_exceeded``, ``request_limit_exceeded``)
#: before it counts as failed.
MAX_CAPACITY_RETRIES = 8


def capacity_backoff(poll_interval: float, retries: int) -> float:
    """Seconds before a shard's ``retries``-th resubmission after a capacity failure: doubling, at most 1 h."""
    return float(min(3600.0, max(poll_interval, 1e-3) * 2 ** max(retries - 1, 0)))


def pending(plan: JobPlan) -> list[ShardInfo]:
    """The shards without a batch yet, by index; none once the job's deadline was hit (they are given up)."""
    if plan.deadline is not None and plan.deadline.hit:
        return []
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
            # A round-0 shard's file can be cut again from the input; a later round's is gone after the merge:
            # its batch is made again from the file uploaded for it.
            and (shard.round == 0 or (shard.input_file_id or batch.input_file_id) is not None)
            and batch.status is BatchStatus.FAILED
            and is_capacity_failure(batch.errors)
            and shard.capacity_retries < MAX_CAPACITY_RETRIES
        ):
            retries = shard.capacity_retries + 1
            wait = capacity_backoff(poll_interval, retries)
            shard = replace(
                shard,
                batch_id=None,
                reused=False,
                capacity_retries=retries,
                not_before=now + wait,
                input_file_id=shard.input_file_id or batch.input_file_id,
            )
            requeued += 1
        shards.append(shard)
    return plan.with_shards(shards), requeued


def admit(plan: JobPlan, batches: Mapping[str, Batch], *, limits: EnqueuedLimits, now: float) -> list[ShardInfo]:
    """The pending shards to submit now, in index order, within ``limits`` per model.

    A model's queue is first in, first out: a shard that does not fit holds back that model's later shards,
    so a large shard is never starved by smaller ones. A shard in back-off (``not_before``) waits its turn.
    A shard is admitted when nothing of its model runs, whatever its size (the split keeps shards within
    the limits).
    """
    tokens: dict[str | None, int] = {}
    requests: dict[str | None, int] = {}
    for shard in plan.shards:
        batch = batches.get(shard.batch_id or "")
        if batch is not None and not batch.status.is_terminal:
            tokens[shard.model] = tokens.get(shard.model, 0) + shard.bytes
            requests[shard.model] = requests.get(shard.model, 0) + shard.requests
    blocked: set[str | None] = set()
    chosen: list[ShardInfo] = []
    for shard in pending(plan):
        if shard.model in blocked:
            continue
        used_tokens, used_requests = tokens.get(shard.model, 0), requests.get(shard.model, 0)
        max_tokens, max_requests = limits.tokens.for_model(shard.model), limits.requests.for_model(shard.model)
        fits = (max_tokens is None or used_tokens + shard.bytes <= max_tokens) and (
            max_requests is None or used_requests + shard.requests <= max_requests
        )
        due = shard.not_before is None or shard.not_before <= now
        if due and (used_requests == 0 or fits):
            tokens[shard.model] = used_tokens + shard.bytes
            requests[shard.model] = used_requests + shard.requests
            chosen.append(shard)
        else:
            blocked.add(shard.model)
    return chosen
