"""Submitting a job's shards: one batch per shard, reused when an earlier try of the task made it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.plan import ShardInfo
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch

__all__ = ["REUSE_SCAN", "ShardSubmitter"]

#: How many of the newest batches are scanned for shard batches an earlier try created.
REUSE_SCAN = 1000


class ShardSubmitter:
    """Creates (or finds again) the batches of a job's shards.

    :param hook: the task's hook.
    :param log: the task's logger.
    :param create: the arguments every shard batch is created with (endpoint, completion window, metadata,
        output expiry).
    :param track: told each batch id as soon as the batch exists (the task cancels them if killed meanwhile).
    :param not_before: epoch seconds before which no earlier try of the task can have created a shard batch
        (:func:`~airflow_provider_openai_batch.idempotency.look_back`): past the newest :data:`REUSE_SCAN`
        batches the scan goes on back to it, so a project busy enough to create more batches than that between
        two tries still gets its shard batches reused, not billed twice. ``0`` scans every batch.
    """

    def __init__(
        self,
        hook: OpenAIBatchHook,
        log: logging.Logger | Any,
        create: Mapping[str, Any],
        track: Callable[[str], None] | None = None,
        not_before: float = 0.0,
    ) -> None:
        self.hook = hook
        self.log = log
        self.create = dict(create)
        self.track = track
        self.not_before = not_before

    def submit(self, split: SplitInput, keys: Sequence[str], stem: str) -> tuple[list[ShardInfo], dict[str, Batch]]:
        """One batch per shard of ``split``, tagged with its key: reused when it exists, else uploaded and created.

        :param split: the shards and their files.
        :param keys: each shard's idempotency key.
        :param stem: the uploaded files' names start with it.
        """
        from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
        from airflow_provider_openai_batch.job.reuse import reusable_batches

        existing = reusable_batches(self._newest_batches(), keys, tag=IDEMPOTENCY_METADATA_KEY)
        shards: list[ShardInfo] = []
        batches: dict[str, Batch] = {}
        for shard, path, key in zip(split.plan.shards, split.paths, keys, strict=True):
            batch = existing.get(key)
            if batch is not None:
                self.log.info("Shard %d: reusing batch %s (%s)", shard.index, batch.id, batch.status.value)
            else:
                batch = self._create(path, f"{stem}.shard-{shard.index:05d}.jsonl", key)
                self.log.info(
                    "Shard %d (lines %d-%d, %d requests): batch %s",
                    shard.index,
                    shard.first_line,
                    shard.last_line,
                    shard.requests,
                    batch.id,
                )
            if self.track is not None:
                self.track(batch.id)
            shards.append(shard.with_batch(batch.id, reused=key in existing))
            batches[batch.id] = batch
        created = sum(1 for shard in shards if not shard.reused)
        self.log.info("Job: %d shard batch(es), %d created, %d reused", len(shards), created, len(shards) - created)
        return shards, batches

    def _create(self, path: Path, filename: str, key: str) -> Batch:
        uploaded = self.hook.upload_file(path, purpose="batch", filename=filename)
        try:
            # The scan above just looked for every shard's batch: no second look before this create.
            return self.hook.create_batch(
                input_file_id=uploaded.id, idempotency_key=key, look_first=False, **self.create
            )
        except Exception:
            with contextlib.suppress(Exception):
                self.hook.delete_file(uploaded.id)
                self.log.info("Deleted the uploaded shard %s since no batch was created from it", uploaded.id)
            raise

    def _newest_batches(self) -> Iterator[Batch]:
        """Newest first: the newest :data:`REUSE_SCAN` batches, then on while they are newer than ``not_before``."""
        from airflow_provider_openai_batch.hooks._lookup import CLOCK_SKEW

        stop_before = self.not_before - CLOCK_SKEW
        for scanned, batch in enumerate(self.hook.iter_batches(), start=1):
            if scanned > REUSE_SCAN and batch.created_at is not None and batch.created_at < stop_before:
                return
            yield batch
