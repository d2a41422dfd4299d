"""What a job is made of: its input and shards (the plan, carried across the deferral), small and JSON-able."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_openai_batch.job.limits import ShardLimits

__all__ = ["JobDeadline", "JobPlan", "ShardInfo"]


@dataclass(frozen=True)
class JobDeadline:
    """A job's deadline, resolved once to a moment, and what happened at it (see :mod:`.deadline`).

    :param at: epoch seconds of the deadline.
    :param on_deadline: ``fail`` or ``partial``.
    :param hit_at: epoch seconds when the job found the deadline passed with work unfinished; ``None`` before.
    :param cancelled: the job's own batches it cancelled at the deadline.
    :param tried_at: epoch seconds of the job's last round of cancels (a cancel that failed is asked again one
        poll interval later, never in a tight loop).
    """

    at: float
    on_deadline: str
    hit_at: float | None = None
    cancelled: tuple[str, ...] = ()
    tried_at: float | None = None

    @property
    def hit(self) -> bool:
        return self.hit_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "on_deadline": self.on_deadline,
            "hit_at": self.hit_at,
            "cancelled": list(self.cancelled),
            "tried_at": self.tried_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobDeadline:
        return cls(
            at=float(data["at"]),
            on_deadline=str(data["on_deadline"]),
            hit_at=float(data["hit_at"]) if data.get("hit_at") is not None else None,
            cancelled=tuple(str(b) for b in data.get("cancelled") or ()),
            tried_at=float(data["tried_at"]) if data.get("tried_at") is not None else None,
        )


@dataclass(frozen=True)
class ShardInfo:
    """One shard: a slice of the input's lines that becomes one batch.

    :param index: 0-based, in the order shards were started while reading the input.
    :param model: the one model of its requests.
    :param first_line: 1-based input line of its first request.
    :param last_line: input line of its last request (lines of other models may lie between when the input
        mixes models).
    :param requests: its requests (lines).
    :param bytes: its size as uploaded.
    :param embedding_inputs: embedding inputs it holds (``/v1/embeddings`` only, else 0).
    :param batch_id: the batch made from it, once it exists.
    :param reused: the batch was found (created by an earlier try), not created by this try.
    :param round: 0 for the input's shards; ``r`` for the shards of the ``r``-th resubmission of failed lines.
    :param capacity_retries: times its batch failed for capacity (``token_limit_exceeded``,
        ``request_limit_exceeded``) and was put back in the queue.
    :param not_before: epoch seconds before which it is not submitted again (back-off after such a failure).
    :param input_file_id: its file as uploaded, when it was uploaded ahead of its batch: a resubmission round's
        shard that waits for capacity (its local file is gone once the task defers), or any shard whose batch
        failed for capacity, so that its batch is made again from the same file.
    :param key: its batch's idempotency key, kept when the plan cannot give it again (a resubmission round's
        shard uploaded ahead of its batch); an input shard's key is worked out from the plan.
    """

    index: int
    model: str | None
    first_line: int
    last_line: int
    requests: int
    bytes: int
    embedding_inputs: int
    batch_id: str | None = None
    reused: bool = False
    round: int = 0
    capacity_retries: int = 0
    not_before: float | None = None
    input_file_id: str | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "model": self.model,
            "first_line": self.first_line,
            "last_line": self.last_line,
            "requests": self.requests,
            "bytes": self.bytes,
            "embedding_inputs": self.embedding_inputs,
            "batch_id": self.batch_id,
            "reused": self.reused,
            "round": self.round,
            "capacity_retries": self.capacity_retries,
            "not_before": self.not_before,
            "input_file_id": self.input_file_id,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardInfo:
        return cls(
            index=int(data["index"]),
            model=data.get("model"),
            first_line=int(data["first_line"]),
            last_line=int(data["last_line"]),
            requests=int(data["requests"]),
            bytes=int(data["bytes"]),
            embedding_inputs=int(data.get("embedding_inputs") or 0),
            batch_id=data.get("batch_id"),
            reused=bool(data.get("reused")),
            round=int(data.get("round") or 0),
            capacity_retries=int(data.get("capacity_retries") or 0),
            not_before=float(data["not_before"]) if data.get("not_before") is not None else None,
            input_file_id=data.get("input_file_id"),
            key=data.get("key"),
        )

    def with_batch(self, batch_id: str, *, reused: bool) -> ShardInfo:
        return replace(self, batch_id=batch_id, reused=reused)


@dataclass(frozen=True)
class JobPlan:
    """A job's input and shards: everything the task needs again after the deferral, without rows.

    :param source: the input as given (path or URI), for messages and the manifest.
    :param sha256: hex SHA-256 of the whole input; the merge checks the input did not change since.
    :param requests: requests (lines) in the input.
    :param bytes: size of the input.
    :param endpoint: the batches' endpoint.
    :param limits: the per-shard limits the input was split by.
    :param leading_ids: every line starts with its ``custom_id`` (checked while splitting), so the merge may
        read ids without parsing whole lines.
    :param shards: the shards, by index.
    :param capacity_wait_seconds: time so far during which a shard waited for capacity (enqueued limit).
    :param waiting_since: epoch seconds since which a shard waits for capacity, ``None`` when none does.
    :param deadline: the job's deadline, ``None`` without one.
    :param job: the key every batch of the job is tagged with (see :mod:`.record`), once known.
    :param attempt: which try of the task made this plan's new shards (part of their tags): the try number and
        how many batches of the job it found first.
    :param first_round: the round this try started at (0 on the first try; after the rounds of the batches an
        earlier try made): ``max_resubmits`` counts the rounds of this try from it.
    """

    source: str
    sha256: str
    requests: int
    bytes: int
    endpoint: str
    limits: ShardLimits
    leading_ids: bool
    shards: tuple[ShardInfo, ...] = field(default_factory=tuple)
    capacity_wait_seconds: float = 0.0
    waiting_since: float | None = None
    deadline: JobDeadline | None = None
    job: str = ""
    attempt: str = ""
    first_round: int = 0

    @property
    def rounds(self) -> int:
        """Resubmission rounds so far (0: only the input's own shards)."""
        return max((shard.round for shard in self.shards), default=0)

    @property
    def batch_ids(self) -> list[str]:
        return [shard.batch_id for shard in self.shards if shard.batch_id]

    def with_shards(self, shards: list[ShardInfo]) -> JobPlan:
        return replace(self, shards=tuple(shards))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "requests": self.requests,
            "bytes": self.bytes,
            "endpoint": self.endpoint,
            "limits": self.limits.to_dict(),
            "leading_ids": self.leading_ids,
            "shards": [shard.to_dict() for shard in self.shards],
            "capacity_wait_seconds": self.capacity_wait_seconds,
            "waiting_since": self.waiting_since,
            "deadline": self.deadline.to_dict() if self.deadline is not None else None,
            "job": self.job,
            "attempt": self.attempt,
            "first_round": self.first_round,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobPlan:
        return cls(
            source=str(data["source"]),
            sha256=str(data["sha256"]),
            requests=int(data["requests"]),
            bytes=int(data["bytes"]),
            endpoint=str(data["endpoint"]),
            limits=ShardLimits.from_dict(dict(data["limits"])),
            leading_ids=bool(data.get("leading_ids")),
            shards=tuple(ShardInfo.from_dict(item) for item in data.get("shards") or ()),
            capacity_wait_seconds=float(data.get("capacity_wait_seconds") or 0.0),
            waiting_since=float(data["waiting_since"]) if data.get("waiting_since") is not None else None,
            deadline=JobDeadline.from_dict(data["deadline"]) if data.get("deadline") else None,
            job=str(data.get("job") or ""),
            attempt=str(data.get("attempt") or ""),
            first_round=int(data.get("first_round") or 0),
        )
