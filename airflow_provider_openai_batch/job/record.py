"""The record of a job: every batch it ever made, found on the service, and how its batches are tagged.

A job's truth is on the service, not in the memory of the try that runs: every batch of a job carries, in its
idempotency tag, the job's key (the task instance and the input's SHA-256: never the try, the round or the
limits) followed by where it came from. So any try (a retry, a clear, a resume, one after a limit change or
past the deadline) finds every batch of the job the same way, reads their output and error files by
``custom_id``, and sends only the lines that no batch answered (see :mod:`.merge` for the per-line reading and
:mod:`~airflow_provider_openai_batch.error_codes` for what each result means). Pure: no Airflow, no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.models import Batch, BatchStatus

__all__ = ["JobRecord", "adopt", "find_job_batches", "job_key", "round_of", "shard_key", "with_key"]


def job_key(context: Any, sha256: str) -> str:
    """The key every batch of this task instance's job on this input is tagged with (no try, round or limit)."""
    from airflow_provider_openai_batch.idempotency import task_instance_key

    return task_instance_key(context, "job", sha256)


def shard_key(job: str, *, attempt: str, round: int, index: int) -> str:
    """One shard batch's tag: the job's key, then the try that made it (``attempt``), its round and place.

    The job's key comes first, so :func:`find_job_batches` finds the batch by prefix whatever follows.
    """
    return f"{job}:{attempt}:{round}:{index}"


def with_key(plan: JobPlan, shard: ShardInfo) -> ShardInfo:
    """``shard`` with its batch's tag (from the plan's job key and attempt), made once and kept in the plan."""
    return replace(shard, key=shard_key(plan.job, attempt=plan.attempt, round=shard.round, index=shard.index))


def _tagged(batch: Batch, prefix: str, tag: str) -> bool:
    value = (batch.metadata or {}).get(tag)
    return isinstance(value, str) and value.startswith(prefix)


def find_job_batches(newest_first: Iterable[Batch], job: str, *, tag: str) -> list[Batch]:
    """Every batch tagged with the job's key, in the order they were made: by round, then creation, then place
    (a later answer of a line wins in the merge; the ``batch_ids`` XCom keeps the shards' order).

    :param newest_first: the batches to look through (the hook's listing, bounded by the caller).
    :param job: the job's key (:func:`job_key`).
    :param tag: the metadata key the tag is stored under.
    """
    prefix = f"{job}:"
    found = {batch.id: batch for batch in newest_first if _tagged(batch, prefix, tag)}
    return sorted(found.values(), key=lambda b: (round_of(b, tag=tag), b.created_at or 0, _place(b, tag), b.id))


def _tag_number(batch: Batch, tag: str, position: int) -> int:
    """A number of a job batch's tag ``<job>:<attempt>:<round>:<place>`` (2: round, 3: place); 0 when absent."""
    parts = str((batch.metadata or {}).get(tag) or "").split(":")
    return int(parts[position]) if len(parts) == 4 and parts[position].isdigit() else 0


def _place(batch: Batch, tag: str) -> int:
    return _tag_number(batch, tag, 3)


@dataclass(frozen=True)
class JobRecord:
    """What a try found of its job on the service before sending anything.

    :param batches: every batch of the job, oldest first.
    :param answered: input lines with a 2xx answer in a live output file.
    :param failed: input lines failed for good (the request is at fault).
    :param inflight: input lines held by a batch that still runs.
    :param unrun: input lines this try sends (no answer, a passing failure, never ran).
    :param unreadable: batches still running whose input file could not be read: nothing is sent until they
        end (their lines cannot be told apart).
    """

    batches: tuple[Batch, ...]
    answered: int = 0
    failed: int = 0
    inflight: int = 0
    unrun: int = 0
    unreadable: tuple[str, ...] = ()

    @property
    def running(self) -> list[Batch]:
        return [b for b in self.batches if not b.status.is_terminal]

    def describe(self) -> str:
        states: dict[str, int] = {}
        for batch in self.batches:
            states[batch.status.value] = states.get(batch.status.value, 0) + 1
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
        return (
            f"{len(self.batches)} batch(es) of this job found ({shown}): {self.answered:,} line(s) answered, "
            f"{self.failed:,} failed for good, {self.inflight:,} in flight, {self.unrun:,} to send"
        )


def round_of(batch: Batch, *, tag: str) -> int:
    """The round a job's batch was made in, read from its tag (0 when the tag does not say)."""
    return _tag_number(batch, tag, 2)


def adopt(
    found: Sequence[Batch],
    *,
    tag: str,
    sizes: Mapping[str, int] | None = None,
    lines: Mapping[str, int] | None = None,
) -> list[ShardInfo]:
    """Shards standing for batches an earlier try made, so that this try waits on, merges and reports them.

    A batch that failed (validation or capacity) holds no results and is left out: its lines are unrun.

    :param sizes: the bytes of the input files read, by batch id: a running batch's counts toward the enqueued
        token limit as the shards of this try do.
    :param lines: the requests in the input files read, by batch id: a batch still validating reports none yet.
    """
    shards = []
    for index, batch in enumerate(b for b in found if b.status is not BatchStatus.FAILED):
        counts = batch.request_counts
        shards.append(
            ShardInfo(
                index=index,
                model=batch.model,
                first_line=0,
                last_line=0,
                requests=counts.total or (lines or {}).get(batch.id, 0),
                bytes=(sizes or {}).get(batch.id, 0),
                embedding_inputs=0,
                batch_id=batch.id,
                reused=True,
                round=round_of(batch, tag=tag),
            )
        )
    return shards
