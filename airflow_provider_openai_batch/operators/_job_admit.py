"""The Job operator's side of admission under the enqueued limits: submit what fits now, log, track.

What fits is decided by :mod:`~airflow_provider_openai_batch.job.admission` (pure); this module does the I/O
around it: the shard files (split again after a deferral, or uploaded ahead for a resubmission round), the
batches, the ``batch_ids`` XCom.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_IDS

if TYPE_CHECKING:
    from airflow_provider_openai_batch.capacity import EnqueuedLimits
    from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators.input_file import InputFile

__all__ = ["CreateUploaded", "SubmitShards", "admit_shards"]

#: ``(split, keys, stem)``: one batch per shard of ``split``, reused or created (``ShardSubmitter.submit``).
SubmitShards = Callable[["SplitInput", Sequence[str], str], "tuple[list[ShardInfo], dict[str, Batch]]"]
#: ``(shards, keys)``: the batch of each shard whose file is uploaded, found or created
#: (``ShardSubmitter.create_uploaded``).
CreateUploaded = Callable[[Sequence["ShardInfo"], Sequence[str]], "tuple[list[ShardInfo], dict[str, Batch]]"]


def admit_shards(
    context: Any,
    plan: JobPlan,
    batches: dict[str, Batch],
    *,
    limits: EnqueuedLimits,
    poll_interval: float,
    source: InputFile,
    submit: SubmitShards,
    create_uploaded: CreateUploaded,
    log: logging.Logger | Any,
    split: SplitInput | None = None,
) -> tuple[JobPlan, dict[str, Batch]]:
    """Submit the pending shards that fit under ``limits`` now; requeue those that failed for capacity.

    :param context: the task's context (shard keys, XCom).
    :param plan: the job's plan so far.
    :param batches: its batches as last seen, by id.
    :param limits: the enqueued limits (the operator's, else the connection's).
    :param poll_interval: the base of the back-off after a capacity failure.
    :param source: the job's input.
    :param submit: creates (or finds again) the batches of some input shards from their files.
    :param create_uploaded: creates (or finds again) the batches of shards whose files are uploaded.
    :param log: the task's logger.
    :param split: the input's shard files when at hand; else the input is split again (same shards, checked
        by its hash), as after a deferral.
    :returns: the plan (shards with their batches, the time spent waiting for capacity) and every batch.
    """
    from airflow_provider_openai_batch.job.admission import admit, pending, requeue_capacity_failures
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.operators._job_submit import shard_keys, split_again

    now = time.time()
    plan, requeued = requeue_capacity_failures(plan, batches, now=now, poll_interval=poll_interval)
    if requeued:
        log.warning(
            "%d shard batch(es) failed for capacity (token_limit_exceeded or request_limit_exceeded): they are "
            "submitted again after a back-off",
            requeued,
        )
    with contextlib.ExitStack() as stack:
        # Until nothing more fits: a batch an earlier try made may be found already ended (a retry or a clear),
        # which frees its capacity at once, and a wait needs a running batch to wake on.
        while chosen := admit(plan, batches, limits=limits, now=now):
            # An input shard is made from its file, cut again from the input; a shard uploaded ahead (a
            # resubmission round's, or one whose batch failed for capacity) from its uploaded file.
            from_input = [shard for shard in chosen if shard.input_file_id is None]
            uploaded = [shard for shard in chosen if shard.input_file_id is not None]
            keys = shard_keys(context, plan)
            shards: list[ShardInfo] = []
            created: dict[str, Batch] = {}
            if from_input:
                if split is None:
                    split = split_again(plan, source, Path(stack.enter_context(tempfile.TemporaryDirectory())))
                paths = dict(zip((shard.index for shard in split.plan.shards), split.paths, strict=True))
                some = SplitInput(plan=plan.with_shards(from_input), paths=tuple(paths[s.index] for s in from_input))
                shards, created = submit(some, [keys[s.index] for s in from_input], Path(source.name).stem or "job")
            if uploaded:
                made, more = create_uploaded(uploaded, [s.key or keys[s.index] for s in uploaded])
                shards, created = [*shards, *made], {**created, **more}
            by_index = {shard.index: shard for shard in shards}
            plan = plan.with_shards([by_index.get(shard.index, shard) for shard in plan.shards])
            batches = {**batches, **created}
            context["ti"].xcom_push(key=XCOM_BATCH_IDS, value=plan.batch_ids)
    left = pending(plan)
    if left:
        log.info("Admission: %d shard(s) wait for capacity (%s)", len(left), limits.describe())
        if plan.waiting_since is None:
            plan = replace(plan, waiting_since=now)
    elif plan.waiting_since is not None:
        waited = plan.capacity_wait_seconds + max(0.0, now - plan.waiting_since)
        plan = replace(plan, capacity_wait_seconds=waited, waiting_since=None)
    return plan, batches
