"""The Job operator's side of a resubmission round: the failed lines' shards submitted as new batches."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.xcom_keys import XCOM_BATCH_IDS

if TYPE_CHECKING:
    from airflow_provider_openai_batch.job.collect import MergedJob
    from airflow_provider_openai_batch.job.plan import JobPlan
    from airflow_provider_openai_batch.models import Batch
    from airflow_provider_openai_batch.operators._job_admit import SubmitShards

__all__ = ["submit_round"]


def submit_round(
    context: Any,
    plan: JobPlan,
    merged: MergedJob,
    work: Path,
    *,
    max_resubmits: int,
    stem: str,
    submit: SubmitShards,
    log: logging.Logger | Any,
    upload: SubmitShards | None = None,
) -> tuple[JobPlan, dict[str, Batch]]:
    """Split the lines that failed for a passing reason (written by the merge) into the next round's shards
    and submit them, each tagged with a key of its own round (a clear mid-resubmission reuses them).

    Under enqueued limits (``upload`` given), the round's batches are not created here: each shard's batch is
    found again or its file uploaded, and admission creates the batches as capacity allows, as for the input's
    shards.

    :param context: the task's context (keys, XCom).
    :param plan: the job's plan so far.
    :param merged: the merge that wrote the retry file.
    :param work: scratch folder the retry file is in; the round's shard files go there too.
    :param max_resubmits: the operator's limit, for the log line.
    :param stem: the input's file stem; the round's uploads are named after it.
    :param submit: creates (or finds again) the batches of the round's shards.
    :param log: the task's logger.
    :param upload: finds again the batches of the round's shards, else uploads their files
        (``ShardSubmitter.upload``); given when the job is admitted under enqueued limits.
    :returns: the plan with the round's shards, and their batches (those found or created).
    """
    from airflow_provider_openai_batch.idempotency import task_instance_key
    from airflow_provider_openai_batch.job.resubmit import split_retry

    assert merged.retry is not None and merged.retry_numbers is not None
    round_ = plan.rounds + 1
    split = split_retry(merged.retry, merged.retry_numbers, work, plan=plan, round=round_)
    keys = [
        task_instance_key(context, "job", plan.sha256, f"resubmit-{round_}", split.plan.sha256, str(i))
        for i in range(len(split.plan.shards))
    ]
    log.info(
        "Resubmission %d of %d: %d line(s) failed for a passing reason and run again in %d batch(es)",
        round_,
        max_resubmits,
        split.plan.requests,
        len(split.plan.shards),
    )
    shards, created = (upload or submit)(split, keys, f"{stem}.r{round_}")
    # Each keeps its key: a round's keys come from its retry file, gone once the task defers.
    shards = [replace(shard, key=key) for shard, key in zip(shards, keys, strict=True)]
    plan = plan.with_shards([*plan.shards, *shards])
    context["ti"].xcom_push(key=XCOM_BATCH_IDS, value=plan.batch_ids)
    return plan, created
