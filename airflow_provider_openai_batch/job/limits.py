"""How much one shard batch may hold: the per-file limits (:class:`FileLimits`), narrowed by the user's own."""

from __future__ import annotations

from airflow_provider_openai_batch.batch_input.limits import AZURE_MAX_REQUESTS, MAX_EMBEDDING_INPUTS, FileLimits

__all__ = ["AZURE_MAX_REQUESTS", "MAX_EMBEDDING_INPUTS", "ShardLimits"]

#: One shard is one batch input file: the same limits, narrowed with :meth:`FileLimits.narrowed`.
ShardLimits = FileLimits
