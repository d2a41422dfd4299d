"""The Job operator's runner: read the job from the service, ask the one decision, carry its step out, again.

Every rule lives in :func:`~airflow_provider_openai_batch.job.decide.decide`; this module only does the I/O
around it (hook calls, uploads, downloads, the merge's files, XComs, the deferral). A try starts by reading
the job's record (:mod:`~airflow_provider_openai_batch.job.record`): every batch an earlier try made, and
their files, so it sends only the lines no batch answered.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
from airflow_provider_openai_batch.job.record import with_key
from airflow_provider_openai_batch.outcome import Verdict
from airflow_provider_openai_batch.waiting import as_seconds
from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_IDS, XCOM_COST, XCOM_MANIFEST

if TYPE_CHECKING:
    from airflow_provider_openai_batch.capacity import EnqueuedLimits
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job.collect import MergedJob
    from airflow_provider_openai_batch.job.plan import JobDeadline, JobPlan, ShardInfo
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.pricing import PriceTable

__all__ = ["SETTLE_CANCELS_SECONDS", "JobRunner", "JobTask"]

#: Seconds a deferrable job waits in the worker for the batches it just cancelled at its deadline to end,
#: before it defers (a cancel usually ends in seconds; a defer and an immediate resume cost more).
SETTLE_CANCELS_SECONDS = 30.0


class JobTask(Protocol):
    """What the runner reads of the task it runs (the Job operator): its arguments, hook and logger, and
    ``defer``. A protocol, so that this module never imports the operator that imports it."""

    batch_ids: list[str]
    endpoint: str
    input_file: Any
    destination: Any
    completion_window: str
    metadata: Mapping[str, str] | None
    output_expires_after: Any
    conn_id: str
    deferrable: bool
    poll_interval: float
    wait_timeout: Any
    cancel_on_kill: bool
    max_consecutive_errors: int
    max_resubmits: int
    allow_partial: bool
    max_failed_requests: int | float | None
    overwrite: bool

    @property
    def log(self) -> Any: ...

    @property
    def hook(self) -> OpenAIBatchHook: ...

    @property
    def enqueued_limits(self) -> EnqueuedLimits: ...

    def price_table(self) -> PriceTable: ...

    def merged_names(self, context: Any) -> tuple[str, str]: ...

    def defer(self, *, trigger: Any, method_name: str, timeout: timedelta | None = None) -> Any: ...


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
        task: JobTask,
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

    def start(self, split: SplitInput, deadline: JobDeadline | None) -> tuple[JobPlan, dict[str, Batch]]:
        """This try's plan: the batches earlier tries made (found by the job's tag) and shards for the rest."""
        from airflow_provider_openai_batch.operators._job_record import RecordReader

        reader = RecordReader(
            hook=self.hook,
            log=self.log,
            context=self.context,
            input_file=self.task.input_file,
            work=self.work,
            clock=self.clock,
        )
        plan, batches, self.paths = reader.read(split, deadline)
        if plan.batch_ids:  # the batches earlier tries made (a clear drops the XComs; they are still the job's)
            self.context["ti"].xcom_push(key=XCOM_BATCH_IDS, value=plan.batch_ids)
        return plan, batches

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
        reused = sum(1 for shard in plan.shards if shard.reused)
        self.log.info(
            "Job: %d shard batch(es), %d created, %d reused", len(plan.batch_ids), len(plan.batch_ids) - reused, reused
        )
        return plan

    def _create(self, plan: JobPlan, shard: ShardInfo) -> Batch:
        create: dict[str, Any] = {
            "endpoint": self.task.endpoint,
            "completion_window": self.task.completion_window,
            "metadata": self.task.metadata,
            "output_expires_after": self.task.output_expires_after,
        }
        key = shard.key or with_key(plan, shard).key
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
                with contextlib.suppress(Exception):  # it may have just ended (a cancel then answers 400)
                    batches[batch_id] = self.hook.retrieve_batch(batch_id)
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

    def _wait(self, step: Wait, batches: dict[str, Batch]) -> JobPlan:
        """Defer (the trigger polls and wakes the task) or poll here until the step's wake condition."""
        plan = step.plan
        if step.wake_on_finish:
            left = sum(1 for shard in plan.shards if shard.batch_id is None)
            self.log.info("Admission: %d shard(s) wait for capacity (%s)", left, self.policy.limits.describe())
        if self.task.deferrable:
            if not self._settle_cancels(step, batches):
                self._defer(self._upload_pending(plan), step)
            return plan
        self._poll(step, batches, timeout=as_seconds(self.task.wait_timeout))
        return plan

    def _settle_cancels(self, step: Wait, batches: dict[str, Batch]) -> bool:
        """Right after the deadline's cancels, wait here a little for them to end (they usually do in seconds)
        rather than defer and resume at once: returns whether every batch waited on has ended."""
        from airflow_provider_openai_batch.models import BatchStatus

        cancelling = [batches[b] for b in step.batch_ids if b in batches]
        if not cancelling or any(b.status is not BatchStatus.CANCELLING for b in cancelling):
            return False
        settle_by = self.clock() + min(SETTLE_CANCELS_SECONDS, 3 * self.task.poll_interval)
        until = settle_by if step.until is None else min(step.until, settle_by)
        self._poll(replace(step, until=until), batches, timeout=None)
        return all(batches[b].status.is_terminal for b in step.batch_ids)

    def _poll(self, step: Wait, batches: dict[str, Batch], *, timeout: float | None) -> None:
        from airflow_provider_openai_batch.operators._job_wait import poll_until

        poll_until(
            step,
            batches,
            hook=self.hook,
            log=self.log,
            poll_interval=self.task.poll_interval,
            max_consecutive_errors=self.task.max_consecutive_errors,
            requests=step.plan.requests,
            timeout=timeout,
            clock=self.clock,
            sleep=self.sleep,
        )

    def _defer(self, plan: JobPlan, step: Wait) -> None:
        from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger

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
            shards.append(with_key(plan, shard))
        self.log.info(
            "Resubmission %d of %d in this try (round %d): %d line(s) failed for a passing reason and run again "
            "in %d batch(es)",
            round_ - plan.first_round,
            self.task.max_resubmits,
            round_,
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
