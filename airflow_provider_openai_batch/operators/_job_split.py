"""Reading a job's input once: every line checked, the requests cut into shard files."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_openai_batch.job.limits import ShardLimits
    from airflow_provider_openai_batch.job.split import SplitInput
    from airflow_provider_openai_batch.operators.input_file import InputFile

__all__ = ["split_job"]


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
