"""The first step of every try of a job: read its record on the service, then plan only what is left.

Every batch an earlier try made carries the job's key in its tag (:mod:`~airflow_provider_openai_batch.job.record`),
so a retry, a clear, a try after a limit change or past the deadline finds them all the same way: it downloads
their output and error files (and the input files of those still running), reads them line by line against the
input, and cuts shards only for the lines no batch answered and none holds. A first try finds nothing and
lists nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.job.record import with_key

if TYPE_CHECKING:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan, ShardInfo
    from airflow_provider_openai_batch.job.record import JobRecord
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch

__all__ = ["REUSE_SCAN", "RecordReader"]

#: How many of the newest batches are scanned for the job's batches before the look-back bound applies.
REUSE_SCAN = 1000


class RecordReader:
    """Reads a job's record for one try.

    :param hook: the task's hook.
    :param log: the task's logger.
    :param context: the task's context (the task instance's identity and try number).
    :param input_file: the job's input (read again, line by line, against the results).
    :param work: a scratch folder that lives as long as the try's runner (the new shards' files are there).
    :param clock: epoch seconds now.
    """

    def __init__(
        self,
        *,
        hook: OpenAIBatchHook,
        log: logging.Logger | Any,
        context: Any,
        input_file: Any,
        work: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hook = hook
        self.log = log
        self.context = context
        self.input_file = input_file
        self.work = work
        self.clock = clock

    def read(
        self, split: SplitInput, deadline: JobDeadline | None
    ) -> tuple[JobPlan, dict[str, Batch], dict[int, Path]]:
        """This try's plan (the batches earlier tries made, found by the job's tag, and shards for the rest), the
        batches found, and the new shards' local files by shard index."""
        from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
        from airflow_provider_openai_batch.idempotency import look_back
        from airflow_provider_openai_batch.job.record import find_job_batches, job_key
        from airflow_provider_openai_batch.operators._job_deadline import refuse_past

        job = job_key(self.context, split.plan.sha256)
        back = look_back(self.context)
        found: list[Batch] = []
        if back.needed:  # a first try cannot have earlier batches: no list calls then
            found = find_job_batches(self._newest(back.not_before), job, tag=IDEMPOTENCY_METADATA_KEY)
        if deadline is not None:  # a later try past the deadline: cancel what earlier tries left running, fail
            refuse_past(deadline, earlier=lambda: self._cancel_running(found), now=self.clock())
        try_number = getattr(self.context["ti"], "try_number", None)
        plan = replace(split.plan, deadline=deadline, job=job, attempt=f"t{try_number or 0}g{len(found)}")
        if not found:
            paths = {shard.index: path for shard, path in zip(split.plan.shards, split.paths, strict=True)}
            return plan.with_shards([with_key(plan, shard) for shard in plan.shards]), {}, paths
        return self._resume_job(plan, found)

    def _resume_job(self, plan: JobPlan, found: Sequence[Batch]) -> tuple[JobPlan, dict[str, Batch], dict[int, Path]]:
        """Adopt the batches earlier tries made; shards (a round after theirs) for the lines none answered."""
        from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
        from airflow_provider_openai_batch.job.record import adopt
        from airflow_provider_openai_batch.job.resubmit import split_retry

        record, retry, numbers, sizes, lines = self._read_record(plan, found)
        adopted = plan.with_shards(adopt(found, tag=IDEMPOTENCY_METADATA_KEY, sizes=sizes, lines=lines))
        self.log.info("Job record: %s", record.describe())
        shards: list[ShardInfo] = list(adopted.shards)
        paths: dict[int, Path] = {}
        first_round = adopted.rounds
        if record.unreadable:
            self.log.warning(
                "The input file of running batch(es) %s could not be read: nothing more is sent until they end",
                ", ".join(record.unreadable),
            )
        elif record.unrun:
            first_round = adopted.rounds + 1
            split = split_retry(retry, numbers, self.work, plan=adopted, round=first_round)
            for shard, path in zip(split.plan.shards, split.paths, strict=True):
                paths[shard.index] = path
                shards.append(with_key(plan, shard))
        plan = replace(plan, first_round=first_round)
        return plan.with_shards(shards), {batch.id: batch for batch in found}, paths

    def _read_record(
        self, plan: JobPlan, found: Sequence[Batch]
    ) -> tuple[JobRecord, Path, Path, dict[str, int], dict[str, int]]:
        """Download the found batches' files and read, line by line, what is answered and what is left.

        :returns: the record, the lines to send and their input line numbers (as the merge writes them), and the
            size and the requests of each running batch's input file (its share of the enqueued limits; a batch
            still validating counts no requests yet).
        """
        from airflow_provider_openai_batch.job.merge import ResultFile, merge_results
        from airflow_provider_openai_batch.job.record import JobRecord
        from airflow_provider_openai_batch.operators.input_file import InputFile

        folder = self.work / "record"
        folder.mkdir()
        results: list[ResultFile] = []
        inflight: list[Path] = []
        sizes: dict[str, int] = {}
        lines: dict[str, int] = {}
        unreadable: list[str] = []
        for batch in found:
            if batch.status.is_terminal:
                for file_id, ok in ((batch.error_file_id, False), (batch.output_file_id, True)):
                    path = self._download(file_id, folder)
                    if path is not None:
                        results.append(ResultFile(path, ok=ok))
            elif (path := self._download(batch.input_file_id, folder)) is not None:
                inflight.append(path)
                sizes[batch.id] = path.stat().st_size
                with open(path, "rb") as handle:
                    lines[batch.id] = sum(1 for raw in handle if raw.strip())
            else:
                unreadable.append(batch.id)
        retry, numbers = folder / "unrun.jsonl", folder / "unrun.lines"
        with (
            InputFile(self.input_file).open() as source,
            open(os.devnull, "wb") as discard,
            open(retry, "wb") as again,
            open(numbers, "wb") as again_numbers,
        ):
            stats = merge_results(
                source,
                results,
                discard,
                discard,
                plan=plan,
                workdir=folder,
                retry=again,
                retry_lines=again_numbers,
                inflight=inflight,
                new_try=True,
            )
        record = JobRecord(
            batches=tuple(found),
            answered=stats.output_lines,
            failed=stats.error_lines - stats.retryable - stats.inflight,
            inflight=stats.inflight,
            unrun=stats.retry_lines,
            unreadable=tuple(unreadable),
        )
        return record, retry, numbers, sizes, lines

    def _download(self, file_id: str | None, folder: Path) -> Path | None:
        """A file of the job's, downloaded; ``None`` when there is none or it is gone (expired or deleted)."""
        from airflow_provider_openai_batch.exceptions import NotFoundError
        from airflow_provider_openai_batch.job.names import local_file_name

        if not file_id:
            return None
        path = folder / local_file_name(file_id)
        try:
            self.hook.download_file(file_id, path)
        except NotFoundError:
            self.log.warning("File %s is gone (expired or deleted): its lines count as not answered", file_id)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return path

    def _newest(self, not_before: float) -> Iterator[Batch]:
        """Newest first: the newest :data:`REUSE_SCAN` batches, then on while they are newer than ``not_before``."""
        from airflow_provider_openai_batch.hooks._lookup import CLOCK_SKEW

        stop_before = not_before - CLOCK_SKEW
        for scanned, batch in enumerate(self.hook.iter_batches(), start=1):
            if scanned > REUSE_SCAN and batch.created_at is not None and batch.created_at < stop_before:
                return
            yield batch

    def _cancel_running(self, found: Sequence[Batch]) -> list[str]:
        cancelled = []
        for batch in found:
            if not batch.status.is_cancellable:
                continue
            try:
                self.hook.cancel_batch(batch.id)
            except Exception as exc:
                self.log.warning("Deadline: cancelling batch %s an earlier try left running failed: %s", batch.id, exc)
                continue
            self.log.warning(
                "Deadline passed: cancelled batch %s, which an earlier try left %s", batch.id, batch.status.value
            )
            cancelled.append(batch.id)
        return cancelled
