"""The Job operator's runner: read the job from the service, ask the one decision, carry its step out, again.

Every rule lives in :func:`~airflow_provider_openai_batch.job.decide.decide`; this module only does the I/O
around it (hook calls, uploads, downloads, the merge's files, XComs, the deferral). A try starts by reading
the job's record (:mod:`~airflow_provider_openai_batch.job.record`): every batch an earlier try made, and
their files, so it sends only the lines no batch answered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch._compat import AirflowException, AirflowFailException
from airflow_provider_openai_batch.budget import report_cost
from airflow_provider_openai_batch.job.decide import (
    Cancel,
    Finish,
    JobPolicy,
    Merge,
    MergeFacts,
    Resubmit,
    Step,
    Submit,
    Wait,
    decide,
)
from airflow_provider_openai_batch.outcome import Verdict
from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_IDS, XCOM_COST, XCOM_MANIFEST

if TYPE_CHECKING:
    from airflow_provider_openai_batch.job.collect import MergedJob
    from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan, ShardInfo
    from airflow_provider_openai_batch.job.record import JobRecord
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

__all__ = ["REUSE_SCAN", "JobRunner"]

#: How many of the newest batches are scanned for the job's batches before the look-back bound applies.
REUSE_SCAN = 1000


class JobRunner:
    """Runs one job for one try of its task, in one worker process (a deferral ends it; the next resumes).

    :param task: the Job operator (its arguments and hook; ``defer`` when it waits deferrably).
    :param context: the task's context (XComs, the task instance's identity).
    :param work: a scratch folder that lives as long as this runner.
    :param clock: epoch seconds now (tests pin it).
    :param sleep: waits in the worker (tests replace it).
    """

    def __init__(
        self,
        task: OpenAIBatchJobOperator,
        context: Any,
        work: Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.task = task
        self.context = context
        self.work = work
        self.clock = clock
        self.sleep = sleep
        self.log: logging.Logger | Any = task.log
        self.hook = task.hook
        #: local shard files of this process, by shard index (gone after a deferral: uploaded before it)
        self.paths: dict[int, Path] = {}
        self.policy = JobPolicy(
            max_resubmits=task.max_resubmits,
            allow_partial=task.allow_partial,
            max_failed_requests=task.max_failed_requests,
            limits=task.enqueued_limits,
            poll_interval=task.poll_interval,
        )

    # -- the first step of a try: read the job's record ---------------------------------------------

    def start(self, split: SplitInput, deadline: JobDeadline | None) -> tuple[JobPlan, dict[str, Batch]]:
        """This try's plan: the batches earlier tries made (found by the job's tag) and shards for the rest."""
        from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
        from airflow_provider_openai_batch.idempotency import look_back
        from airflow_provider_openai_batch.job.record import find_job_batches, job_key
        from airflow_provider_openai_batch.operators._job_deadline import refuse_past

        job = job_key(self.context, split.plan.sha256)
        back = look_back(self.context)
        found: list[Batch] = []
        if back.needed:  # a first try cannot have earlier batches: no list calls then
            found = find_job_batches(self._newest(back.not_before), job, tag=IDEMPOTENCY_METADATA_KEY)
        if deadline is not None and not (found and deadline.on_deadline == "partial"):
            # A later try past the deadline: cancel what earlier tries left running, fail. With "partial" and
            # batches found, the decision cancels them, sends nothing and merges what they answered.
            refuse_past(deadline, earlier=lambda: self._cancel_running(found), now=self.clock())
        elif deadline is not None and self.clock() >= deadline.at:  # what earlier tries cancelled at it counts
            at = int(deadline.at)  # the service stamps whole seconds
            cancelled = tuple(b.id for b in found if b.cancelling_at is not None and b.cancelling_at >= at)
            deadline = replace(deadline, cancelled=cancelled)
        try_number = getattr(self.context["ti"], "try_number", None)
        plan = replace(split.plan, deadline=deadline, job=job, attempt=f"t{try_number or 0}g{len(found)}")
        if not found:
            self.paths = {shard.index: path for shard, path in zip(split.plan.shards, split.paths, strict=True)}
            return plan.with_shards([self._keyed(plan, shard) for shard in plan.shards]), {}
        return self._resume_job(plan, found)

    def _resume_job(self, plan: JobPlan, found: Sequence[Batch]) -> tuple[JobPlan, dict[str, Batch]]:
        """Adopt the batches earlier tries made; shards (a round after theirs) for the lines none answered."""
        from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
        from airflow_provider_openai_batch.job.record import adopt
        from airflow_provider_openai_batch.job.resubmit import split_retry

        adopted = plan.with_shards(adopt(found, tag=IDEMPOTENCY_METADATA_KEY))
        record, retry, numbers = self._read_record(adopted, found)
        self.log.info("Job record: %s", record.describe())
        shards: list[ShardInfo] = list(adopted.shards)
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
                self.paths[shard.index] = path
                shards.append(self._keyed(plan, shard))
        plan = replace(plan, first_round=first_round)
        return plan.with_shards(shards), {batch.id: batch for batch in found}

    def _read_record(self, plan: JobPlan, found: Sequence[Batch]) -> tuple[JobRecord, Path, Path]:
        """Download the found batches' files and read, line by line, what is answered and what is left."""
        from airflow_provider_openai_batch.job.merge import ResultFile, merge_results
        from airflow_provider_openai_batch.job.record import JobRecord
        from airflow_provider_openai_batch.operators.input_file import InputFile

        folder = self.work / "record"
        folder.mkdir()
        results: list[ResultFile] = []
        inflight: list[Path] = []
        unreadable: list[str] = []
        for batch in found:
            if batch.status.is_terminal:
                for file_id, ok in ((batch.error_file_id, False), (batch.output_file_id, True)):
                    path = self._download(file_id, folder)
                    if path is not None:
                        results.append(ResultFile(path, ok=ok))
            elif (path := self._download(batch.input_file_id, folder)) is not None:
                inflight.append(path)
            else:
                unreadable.append(batch.id)
        retry, numbers = folder / "unrun.jsonl", folder / "unrun.lines"
        with (
            InputFile(self.task.input_file).open() as source,
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
        return record, retry, numbers

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

    def _keyed(self, plan: JobPlan, shard: ShardInfo) -> ShardInfo:
        from airflow_provider_openai_batch.job.record import shard_key

        return replace(shard, key=shard_key(plan.job, attempt=plan.attempt, round=shard.round, index=shard.index))

    # -- the loop ------------------------------------------------------------------------------

    def run(self, plan: JobPlan, batches: dict[str, Batch]) -> dict[str, Any]:
        """Ask the decision and carry its step out until the job finishes (returns the manifest) or defers."""
        self.task.batch_ids = [b for b in plan.batch_ids if b in batches and not batches[b].status.is_terminal]
        facts: MergeFacts | None = None
        merged: MergedJob | None = None
        while True:
            step: Step = decide(plan, batches, merged=facts, now=self.clock(), policy=self.policy)
            plan = step.plan
            if isinstance(step, Finish):
                return self._finish(step, batches, merged)
            if isinstance(step, Merge):
                merged = self._merge(plan, batches, resubmit=step.resubmit)
                stats = merged.stats
                facts = MergeFacts(answered=stats.output_lines, unrun=stats.unrun, retry_lines=stats.retry_lines)
                continue
            facts = None
            if isinstance(step, Cancel):
                plan = self._cancel(step, batches)
            elif isinstance(step, Submit):
                plan = self._submit(plan, step.shards, batches)
            elif isinstance(step, Resubmit):
                assert merged is not None
                plan = self._resubmit(plan, merged)
            else:
                plan = self._wait(step, batches)

    # -- each step's I/O ---------------------------------------------------------------------------

    def _submit(self, plan: JobPlan, chosen: Sequence[ShardInfo], batches: dict[str, Batch]) -> JobPlan:
        """Create the chosen shards' batches (uploading a shard's file first when it is not uploaded)."""
        made: dict[int, ShardInfo] = {}
        for shard in chosen:
            batch = self._create(plan, shard)
            batches[batch.id] = batch
            self.task.batch_ids.append(batch.id)
            made[shard.index] = replace(shard, batch_id=batch.id, reused=False)
            self.log.info(
                "Shard %d (round %d, %d requests, lines %d-%d): batch %s",
                shard.index,
                shard.round,
                shard.requests,
                shard.first_line,
                shard.last_line,
                batch.id,
            )
        plan = plan.with_shards([made.get(shard.index, shard) for shard in plan.shards])
        self.context["ti"].xcom_push(key=XCOM_BATCH_IDS, value=plan.batch_ids)
        return plan

    def _create(self, plan: JobPlan, shard: ShardInfo) -> Batch:
        create: dict[str, Any] = {
            "endpoint": self.task.endpoint,
            "completion_window": self.task.completion_window,
            "metadata": self.task.metadata,
            "output_expires_after": self.task.output_expires_after,
        }
        key = shard.key or self._keyed(plan, shard).key
        if shard.input_file_id is not None:
            return self.hook.create_batch(
                input_file_id=shard.input_file_id, idempotency_key=key, look_first=False, **create
            )
        file_id = self._upload(plan, shard)
        try:
            return self.hook.create_batch(input_file_id=file_id, idempotency_key=key, look_first=False, **create)
        except Exception:
            with contextlib.suppress(Exception):
                self.hook.delete_file(file_id)
                self.log.info("Deleted the uploaded shard %s since no batch was created from it", file_id)
            raise

    def _upload(self, plan: JobPlan, shard: ShardInfo) -> str:
        from airflow_provider_openai_batch.operators.input_file import InputFile

        path = self.paths.get(shard.index)
        if path is None:
            raise AirflowException(f"Shard {shard.index} has neither an uploaded file nor a local one")
        stem = Path(InputFile(self.task.input_file).name).stem or "job"
        name = f"{stem}.r{shard.round}.shard-{shard.index:05d}.jsonl"
        return str(self.hook.upload_file(path, purpose="batch", filename=name).id)

    def _upload_pending(self, plan: JobPlan) -> JobPlan:
        """Before a deferral, upload the files of shards still waiting for capacity: the local ones are gone after."""
        from airflow_provider_openai_batch.job.admission import pending

        uploaded = {
            shard.index: replace(shard, input_file_id=self._upload(plan, shard))
            for shard in pending(plan)
            if shard.input_file_id is None
        }
        if uploaded:
            self.log.info("Uploaded %d shard(s) that wait for capacity", len(uploaded))
        return plan.with_shards([uploaded.get(shard.index, shard) for shard in plan.shards])

    def _cancel(self, step: Cancel, batches: dict[str, Batch]) -> JobPlan:
        from airflow_provider_openai_batch.job.deadline import describe_deadline, mark_hit
        from airflow_provider_openai_batch.models import BatchStatus

        plan = step.plan
        assert plan.deadline is not None
        first = not plan.deadline.hit
        cancelled: list[str] = []
        for batch_id in step.batch_ids:
            try:
                batch = self.hook.cancel_batch(batch_id)
            except Exception as exc:
                self.log.warning("Deadline: cancelling batch %s failed (tried again later): %s", batch_id, exc)
                continue
            batches[batch_id] = batch
            if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                cancelled.append(batch_id)
        plan = mark_hit(plan, now=self.clock(), cancelled=tuple(cancelled))
        if first:
            self.log.warning(
                "The job's deadline %s passed with work unfinished: %d batch(es) cancelled, %d shard(s) never "
                "submitted (on_deadline=%r)",
                describe_deadline(plan.deadline.at),  # type: ignore[union-attr]
                len(cancelled),
                step.not_submitted,
                plan.deadline.on_deadline,  # type: ignore[union-attr]
            )
        return plan

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

    def _wait(self, step: Wait, batches: dict[str, Batch]) -> JobPlan:
        """Defer (the trigger polls and wakes the task) or poll here until the step's wake condition."""
        plan = step.plan
        if step.wake_on_finish:
            left = sum(1 for shard in plan.shards if shard.batch_id is None)
            self.log.info("Admission: %d shard(s) wait for capacity (%s)", left, self.policy.limits.describe())
        if self.task.deferrable:
            self._defer(self._upload_pending(plan), step)
        from airflow_provider_openai_batch.operators._job_wait import poll_until

        poll_until(
            step,
            batches,
            hook=self.hook,
            log=self.log,
            poll_interval=self.task.poll_interval,
            max_consecutive_errors=self.task.max_consecutive_errors,
            requests=plan.requests,
            clock=self.clock,
            sleep=self.sleep,
        )
        return plan

    def _defer(self, plan: JobPlan, step: Wait) -> None:
        from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger
        from airflow_provider_openai_batch.waiting import as_seconds

        timeout = as_seconds(self.task.wait_timeout)
        self.task.defer(
            trigger=OpenAIBatchJobTrigger(
                conn_id=self.task.conn_id,
                batch_ids=list(step.batch_ids),
                wake_on_finish=step.wake_on_finish,
                wake_at=step.until,
                poll_interval=self.task.poll_interval,
                cancel_on_kill=self.task.cancel_on_kill,
                max_consecutive_errors=self.task.max_consecutive_errors,
                requests=plan.requests,
                plan=plan.to_dict(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout) if timeout is not None else None,
        )

    def _merge(self, plan: JobPlan, batches: Mapping[str, Batch], *, resubmit: bool) -> MergedJob:
        from airflow_provider_openai_batch.job.collect import collect_results
        from airflow_provider_openai_batch.job.deadline import overdue
        from airflow_provider_openai_batch.job.destination import task_instance_owner
        from airflow_provider_openai_batch.operators.input_file import InputFile

        source = InputFile(self.task.input_file)
        retry_dir = self.work / f"merge-{plan.rounds}"
        retry_dir.mkdir(exist_ok=True)
        merged = collect_results(
            plan,
            batches,
            download=self.hook.download_file,
            open_input=source.open,
            names=self.task.merged_names(self.context),
            destination=self.task.destination,
            owner=task_instance_owner(self.context),
            overwrite=self.task.overwrite,
            retry_dir=retry_dir if resubmit else None,
            overdue=overdue(plan),
            log=self.log,
        )
        stats = merged.stats
        self.log.info(
            "Merged %d result file(s) in input order: %d answered, %d failed or unanswered (%d missing); "
            "download %.1fs, merge %.1fs",
            merged.result_files,
            stats.output_lines,
            stats.error_lines,
            stats.missing,
            merged.download_seconds,
            merged.merge_seconds,
        )
        if stats.unexpected:
            self.log.warning("%d result line(s) matched no input line and were left out", stats.unexpected)
        return merged

    def _resubmit(self, plan: JobPlan, merged: MergedJob) -> JobPlan:
        from airflow_provider_openai_batch.job.resubmit import split_retry

        assert merged.retry is not None and merged.retry_numbers is not None
        round_ = plan.rounds + 1
        split = split_retry(merged.retry, merged.retry_numbers, self.work, plan=plan, round=round_)
        shards = []
        for shard, path in zip(split.plan.shards, split.paths, strict=True):
            self.paths[shard.index] = path
            shards.append(self._keyed(plan, shard))
        self.log.info(
            "Resubmission %d of %d: %d line(s) failed for a passing reason and run again in %d batch(es)",
            round_,
            self.task.max_resubmits,
            split.plan.requests,
            len(shards),
        )
        return plan.with_shards([*plan.shards, *shards])

    def _finish(self, step: Finish, batches: Mapping[str, Batch], merged: MergedJob | None) -> dict[str, Any]:
        """Push the cost and the manifest; return it, or fail with the verdict's message."""
        from airflow_provider_openai_batch.job.manifest import build_manifest

        plan, outcome = step.plan, step.outcome
        ti = self.context["ti"]
        shard_batches = [(shard, batches.get(shard.batch_id or "")) for shard in plan.shards]
        usages = [(batch.model or shard.model, batch.usage) for shard, batch in shard_batches if batch is not None]
        ti.xcom_push(key=XCOM_COST, value=report_cost(self.task, usages, self.task.price_table))
        limits = self.task.enqueued_limits
        manifest = build_manifest(
            plan,
            batches,
            output=merged.output if merged is not None else None,
            error=merged.error if merged is not None else None,
            stats=merged.stats if merged is not None else None,
            verdict="fail" if outcome.verdict is Verdict.FAIL else "succeed",
            reason=outcome.reason.value,
            enqueued_limits=limits.to_dict() if limits.is_set else None,
        )
        ti.xcom_push(key=XCOM_MANIFEST, value=manifest)
        files = ""
        if merged is not None:
            files = f" Merged output: {merged.output['path']}"
            files += f"; errors: {merged.error['path']}" if merged.error else ""
        if outcome.verdict is Verdict.FAIL:
            raise (AirflowException if step.retryable else AirflowFailException)(outcome.message + files)
        self.log.info("%s%s", outcome.message, files)
        return manifest
