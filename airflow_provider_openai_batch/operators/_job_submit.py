"""Submitting a job's shards: one batch per shard, reused when an earlier try of the task made it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowFailException

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.limits import ShardLimits
    from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators.input_file import InputFile

__all__ = ["REUSE_SCAN", "ShardSubmitter", "shard_keys", "split_again", "split_job"]

#: How many of the newest batches are scanned for shard batches an earlier try created.
REUSE_SCAN = 1000


def split_job(
    source: InputFile, work: str | Path, *, endpoint: str, limits: ShardLimits, log: logging.Logger | Any
) -> SplitInput:
    """Read the input once: check every line (errors name their lines) and cut it into shards in ``work``."""
    from airflow_provider_openai_batch.job.split import split_input

    started = time.monotonic()
    with source.open() as handle:
        split = split_input(handle, work, endpoint=endpoint, limits=limits, source=str(source))
    plan = split.plan
    log.info(
        "Checked and split %s in %.1fs: %d requests, %d bytes -> %d shard(s) (limits: %s)",
        source,
        time.monotonic() - started,
        plan.requests,
        plan.bytes,
        len(plan.shards),
        limits.to_dict(),
    )
    return split


def shard_keys(context: Any, plan: JobPlan) -> list[str]:
    """Each input shard's idempotency key: the task instance, the input's hash, the limits and the shard's place.

    A one-shard job takes the Create operator's key: it is that one batch.
    """
    from airflow_provider_openai_batch.idempotency import task_instance_key

    inputs = [shard for shard in plan.shards if shard.round == 0]  # a resubmission round's shards keep their own
    if len(inputs) == 1:
        return [task_instance_key(context, "sha256", plan.sha256)]
    limits = ",".join(str(v) for v in plan.limits.to_dict().values())
    count = str(len(inputs))
    return [task_instance_key(context, "job", plan.sha256, limits, count, str(shard.index)) for shard in inputs]


def split_again(plan: JobPlan, source: InputFile, work: Path) -> SplitInput:
    """The input's shard files again (after a deferral): the same split, or a failure if the input changed."""
    from airflow_provider_openai_batch.job.split import split_input

    with source.open() as handle:
        split = split_input(handle, work, endpoint=plan.endpoint, limits=plan.limits, source=plan.source)
    if split.plan.sha256 != plan.sha256 or len(split.plan.shards) != len([s for s in plan.shards if s.round == 0]):
        raise AirflowFailException(
            f"The input {plan.source} changed while the job ran: its shards cannot be submitted. "
            "Keep the input unchanged until the job ends."
        )
    return split


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
        existing = self.existing(keys)
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

    def upload(self, split: SplitInput, keys: Sequence[str], stem: str) -> tuple[list[ShardInfo], dict[str, Batch]]:
        """Find each shard's batch again, else upload only its file: its batch is made once admitted.

        For a resubmission round that waits for capacity: its shard files are gone once the task defers, the
        uploaded files stay (they expire with the connection's ``input_expires_after``).

        :returns: the shards (with their batch when found, else with their file id and key) and the batches found.
        """
        from dataclasses import replace

        existing = self.existing(keys)
        shards: list[ShardInfo] = []
        for shard, path, key in zip(split.plan.shards, split.paths, keys, strict=True):
            batch = existing.get(key)
            if batch is not None:
                self.log.info("Shard %d: reusing batch %s (%s)", shard.index, batch.id, batch.status.value)
                if self.track is not None:
                    self.track(batch.id)
                shards.append(replace(shard, key=key).with_batch(batch.id, reused=True))
            else:
                uploaded = self.hook.upload_file(
                    path, purpose="batch", filename=f"{stem}.shard-{shard.index:05d}.jsonl"
                )
                shards.append(replace(shard, input_file_id=uploaded.id, key=key))
        found = {batch.id: batch for batch in existing.values()}
        self.log.info(
            "Job: %d shard(s), %d batch(es) found, the others uploaded to wait for capacity", len(shards), len(found)
        )
        return shards, found

    def create_uploaded(
        self, shards: Sequence[ShardInfo], keys: Sequence[str]
    ) -> tuple[list[ShardInfo], dict[str, Batch]]:
        """The batch of each shard whose file is uploaded (``input_file_id``): found again, else created from it."""
        existing = self.existing(keys)
        done: list[ShardInfo] = []
        batches: dict[str, Batch] = {}
        for shard, key in zip(shards, keys, strict=True):
            assert shard.input_file_id is not None
            batch = existing.get(key)
            if batch is None:
                batch = self.hook.create_batch(
                    input_file_id=shard.input_file_id, idempotency_key=key, look_first=False, **self.create
                )
                self.log.info(
                    "Shard %d (round %d, %d requests): batch %s", shard.index, shard.round, shard.requests, batch.id
                )
            if self.track is not None:
                self.track(batch.id)
            done.append(shard.with_batch(batch.id, reused=key in existing))
            batches[batch.id] = batch
        return done, batches

    def existing(self, keys: Sequence[str]) -> dict[str, Batch]:
        from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
        from airflow_provider_openai_batch.job.reuse import reusable_batches

        return reusable_batches(self._newest_batches(), keys, tag=IDEMPOTENCY_METADATA_KEY)

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
