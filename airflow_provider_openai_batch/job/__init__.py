"""The job layer: one input of any size as several batches, split, waited for once, merged in input order.

Pure logic and local files only (no Airflow, no HTTP): :mod:`.split` cuts the input into shards within
:class:`~.limits.ShardLimits`, :mod:`.merge` puts the shard results back in input order, :mod:`.verdict`
judges the whole job and :mod:`.manifest` summarises it. ``operators/job.py`` drives them.
"""

from __future__ import annotations

from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.merge import MergeStats, ResultFile, merge_results
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo
from airflow_provider_openai_batch.job.split import SplitInput, split_input

__all__ = [
    "JobPlan",
    "MergeStats",
    "ResultFile",
    "ShardInfo",
    "ShardLimits",
    "SplitInput",
    "merge_results",
    "split_input",
]
