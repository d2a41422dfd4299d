"""The Job operator's side of admission under ``max_enqueued_tokens``: submit what fits now, log, track.

What fits is decided by :mod:`~airflow_provider_openai_batch.job.admission` (pure); this module does the I/O
around it: the shard files (split again after a deferral), the batches, the ``batch_ids`` XCom.
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
    from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators.input_file import InputFile

__all__ = ["SubmitShards", "admit_shards"]

#: ``(split, keys, stem)``: one batch per shard of ``split``, reused or created (``ShardSubmitter.submit``).
SubmitShards = Callable[["SplitInput", Sequence[str], str], "tuple[list[ShardInfo], dict[str, Batch]]"]


def admit_shards(
    context: Any,
    plan: JobPlan,
    batches: dict[str, Batch],
    *,
    max_tokens: int,
    poll_interval: float,
    source: InputFile,
    submit: SubmitShards,
    log: logging.Logger | Any,
    split: SplitInput | None = None,
) -> tuple[JobPlan, dict[str, Batch]]:
    """Submit the pending shards that fit under ``max_tokens`` now; requeue those that failed for capacity.

    :param context: the task's context (shard keys, XCom).
    :param plan: the job's plan so far.
    :param batches: its batches as last seen, by id.
    :param max_tokens: the operator's ``max_enqueued_tokens``.
    :param poll_interval: the base of the back-off after ``token_limit_exceeded``.
    :param source: the job's input.
    :param submit: creates (or finds again) the batches of some shards.
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
            "%d shard batch(es) failed with token_limit_exceeded: they are submitted again after a back-off",
            requeued,
        )
    chosen = admit(plan, batches, max_tokens=max_tokens, now=now)
    if chosen:
        keys = shard_keys(context, plan)
        with contextlib.ExitStack() as stack:
            if split is None:
                split = split_again(plan, source, Path(stack.enter_context(tempfile.TemporaryDirectory())))
            paths = dict(zip((shard.index for shard in split.plan.shards), split.paths, strict=True))
            some = SplitInput(plan=plan.with_shards(chosen), paths=tuple(paths[s.index] for s in chosen))
            shards, created = submit(some, [keys[s.index] for s in chosen], Path(source.name).stem or "job")
        by_index = {shard.index: shard for shard in shards}
        plan = plan.with_shards([by_index.get(shard.index, shard) for shard in plan.shards])
        batches = {**batches, **created}
        context["ti"].xcom_push(key=XCOM_BATCH_IDS, value=plan.batch_ids)
    left = pending(plan)
    if left:
        log.info("Admission: %d shard(s) wait for capacity (max_enqueued_tokens=%d)", len(left), max_tokens)
        if plan.waiting_since is None:
            plan = replace(plan, waiting_since=now)
    elif plan.waiting_since is not None:
        waited = plan.capacity_wait_seconds + max(0.0, now - plan.waiting_since)
        plan = replace(plan, capacity_wait_seconds=waited, waiting_since=None)
    return plan, batches
