"""Which shard batches an earlier try of the task already made: one scan of the newest batches for all keys."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from airflow_provider_openai_batch.models import Batch, BatchStatus

__all__ = ["reusable_batches"]

log = logging.getLogger(__name__)


def reusable_batches(batches: Iterable[Batch], keys: Collection[str], *, tag: str) -> dict[str, Batch]:
    """The running or completed batch of each of ``keys``, by key.

    The newest batch carrying a key decides, as for the Create operator: a failed, expired, cancelled or
    cancelling one means its shard is submitted again. The scan stops once every key is decided.

    :param batches: the newest batches first (the hook's ``iter_batches``).
    :param keys: the shards' idempotency keys.
    :param tag: the metadata key the idempotency key is stored under.
    """
    wanted = set(keys)
    decided: set[str] = set()
    found: dict[str, Batch] = {}
    for batch in batches:
        key = (batch.metadata or {}).get(tag)
        if key is None or key not in wanted or key in decided:
            continue
        decided.add(key)
        if batch.status is BatchStatus.CANCELLING or (batch.status.is_terminal and not batch.status.is_success):
            log.info("Batch %s is %s; its shard is submitted again", batch.id, batch.status.value)
        else:
            found[key] = batch
        if len(decided) == len(wanted):
            break
    return found
