"""The job's manifest: the small summary a job task returns through XCom (never rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_openai_batch.job.deadline import deadline_report
from airflow_provider_openai_batch.job.merge import DEADLINE_EXCEEDED, MergeStats
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.models import Batch

__all__ = ["build_manifest", "total_usage"]

_USAGE_KEYS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")


def total_usage(batches: Sequence[Batch]) -> dict[str, int]:
    """Token usage summed over the shard batches (batches without usage count zero)."""
    totals = dict.fromkeys(_USAGE_KEYS, 0)
    for batch in batches:
        if batch.usage is not None:
            for key in _USAGE_KEYS:
                totals[key] += getattr(batch.usage, key)
    return totals


def _shard(shard: ShardInfo, batch: Batch) -> dict[str, Any]:
    counts = batch.request_counts
    return {
        "index": shard.index,
        "batch_id": batch.id,
        "status": batch.status.value,
        "model": shard.model,
        "first_line": shard.first_line,
        "last_line": shard.last_line,
        "requests": shard.requests,
        "bytes": shard.bytes,
        "completed": counts.completed,
        "failed": counts.failed,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "reused": shard.reused,
        "round": shard.round,
    }


def _deadline(plan: JobPlan, stats: MergeStats | None) -> dict[str, Any] | None:
    if plan.deadline is None:
        return None
    lines = stats.error_codes.get(DEADLINE_EXCEEDED, 0) if stats is not None else None
    return deadline_report(plan.deadline, plan, lines)


def build_manifest(
    plan: JobPlan,
    batches: Mapping[str, Batch],
    *,
    output: Mapping[str, Any] | None,
    error: Mapping[str, Any] | None,
    stats: MergeStats | None,
    verdict: str,
    reason: str,
    enqueued_limits: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest, as plain JSON.

    :param plan: the job's input and shards.
    :param batches: every shard's batch as last seen, by batch id.
    :param output: the merged output file (``path``, ``lines``, ``bytes``), ``None`` when not merged.
    :param error: the merged error file, ``None`` when there is none.
    :param stats: what the merge counted, ``None`` when not merged.
    :param verdict: ``succeed`` or ``fail``.
    :param reason: the verdict's reason code.
    :param enqueued_limits: the enqueued limits the shards were admitted under
        (:meth:`~airflow_provider_openai_batch.capacity.EnqueuedLimits.to_dict`), ``None`` when none were set.
    """
    shards = [(shard, batches[shard.batch_id]) for shard in plan.shards if shard.batch_id and shard.batch_id in batches]
    answered = stats.output_lines if stats is not None else sum(b.request_counts.completed for _, b in shards)
    return {
        "input": {"source": plan.source, "sha256": plan.sha256, "requests": plan.requests, "bytes": plan.bytes},
        "endpoint": plan.endpoint,
        "limits": plan.limits.to_dict(),
        "shards": [_shard(shard, batch) for shard, batch in shards],
        "output": dict(output) if output is not None else None,
        "error": dict(error) if error is not None else None,
        "totals": {
            "requests": plan.requests,
            "completed": answered,
            "failed": plan.requests - answered,
            "missing": stats.missing if stats is not None else None,
            "unexpected": stats.unexpected if stats is not None else None,
            "batches": len(shards),
            "batches_reused": sum(1 for shard, _ in shards if shard.reused),
        },
        "errors_by_code": dict(stats.error_codes) if stats is not None else {},
        # Requests sent per round (round 0: the input; then each resubmission of lines that failed for a
        # passing reason), and the failed lines left that a further round might still heal.
        "rounds": [
            {"round": r, "requests": sum(s.requests for s, _ in shards if s.round == r)} for r in range(plan.rounds + 1)
        ],
        "resubmitted": sum(shard.requests for shard, _ in shards if shard.round > 0),
        "retryable_left": stats.retryable if stats is not None else None,
        # Admission under the enqueued limits: the limits, the time during which a shard (of any round) waited
        # for capacity, and how many times a shard batch failed for capacity (token_limit_exceeded or
        # request_limit_exceeded) and was put back in the queue.
        "capacity": {
            "limits": dict(enqueued_limits) if enqueued_limits is not None else None,
            "wait_seconds": round(plan.capacity_wait_seconds, 3),
            "capacity_retries": sum(shard.capacity_retries for shard in plan.shards),
        },
        # The deadline (None without one): when, whether it was hit with work unfinished, the batches cancelled
        # then, the shards never submitted, and the lines left as deadline_exceeded.
        "deadline": _deadline(plan, stats),
        "usage": total_usage([batch for _, batch in shards]),
        "verdict": verdict,
        "reason": reason,
    }
