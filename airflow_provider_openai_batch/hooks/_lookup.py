"""Finding the batch an earlier try of a task instance created, and deciding whether it can be reused.

The API has no metadata filter, so the look-up pages through ``GET /batches`` newest first. It is bounded by
time, not by count: a batch made by this task instance cannot be older than the earliest moment it could
have run (``not_before``), so paging stops at the first batch created before that, however many batches the
project makes in between. Both clocks (Airflow's and the service's) are trusted only to within
:data:`CLOCK_SKEW`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_openai_batch.hooks.validation import IDEMPOTENCY_METADATA_KEY
from airflow_provider_openai_batch.models import Batch, BatchStatus, FileObject

__all__ = ["CLOCK_SKEW", "MIN_SCANNED", "newest_tagged", "raw_pages", "why_not_reusable"]

log = logging.getLogger(__name__)

#: Seconds by which the service's clock (``created_at``) and Airflow's may disagree; the bound is moved back
#: by this much. An earlier bound only costs more pages; a later one could miss the batch.
CLOCK_SKEW = 300.0
#: Batches always read (one page), whatever their ``created_at`` says.
MIN_SCANNED = 100


def raw_pages(list_page: Callable[[str | None], Mapping[str, Any]]) -> Iterator[list[Any]]:
    """Pages of raw listed batches, newest first, one list call each (raw: an unknown status is no error).

    :param list_page: one ``GET /batches`` (100 a page) after the given id.
    """
    after: str | None = None
    while True:
        payload = list_page(after)
        data = payload.get("data")
        items = data if isinstance(data, list) else []
        yield items
        last = items[-1] if items else None
        after = last.get("id") if isinstance(last, Mapping) else None
        if payload.get("has_more") is False or not isinstance(after, str):
            return


def newest_tagged(
    pages: Iterable[list[Any]], key: str, *, not_before: float | None, max_scanned: int | None
) -> Batch | None:
    """The newest listed batch tagged with ``key``, or ``None``.

    :param pages: pages of raw listed batches, newest first; consumed lazily (one list call a page).
    :param not_before: epoch seconds; paging stops at the first batch created before it (less the skew). The
        newest :data:`MIN_SCANNED` batches are read in any case, so that a clock far off cannot hide a batch
        just made.
    :param max_scanned: stop after this many batches (``None``: no count bound).
    """
    stop_before = None if not_before is None else not_before - CLOCK_SKEW

    def past_bound(item: object, scanned: int) -> bool:
        created = item.get("created_at") if isinstance(item, Mapping) else None
        old = stop_before is not None and isinstance(created, (int, float)) and created < stop_before
        return old and scanned >= MIN_SCANNED

    scanned = 0
    for items in pages:
        for item in items:
            if past_bound(item, scanned):
                return None
            scanned += 1
            batch = _tagged_batch(item, key)
            if batch is not None or (max_scanned is not None and scanned >= max_scanned):
                return batch
        if items and past_bound(items[-1], scanned):
            return None  # the next page is older still: not worth a list call
    return None


def _tagged_batch(item: object, key: str) -> Batch | None:
    """``item`` as a batch when it carries ``key`` and a status this version knows; ``None`` otherwise."""
    metadata = item.get("metadata") if isinstance(item, Mapping) else None
    if not isinstance(metadata, Mapping) or metadata.get(IDEMPOTENCY_METADATA_KEY) != key:
        return None
    assert isinstance(item, Mapping)
    # A status this version does not know (the API adds some; gateways invent their own) is skipped: what it
    # means for reuse cannot be told.
    try:
        batch = Batch.from_dict(item)
    except (TypeError, ValueError) as exc:
        log.warning("Skipping batch %s in the look-up: %s", item.get("id"), exc)
        return None
    if not getattr(batch.status, "is_known", True):
        log.warning("Skipping batch %s in the look-up: unknown status %r", batch.id, batch.status.value)
        return None
    return batch


def why_not_reusable(batch: Batch, output_file: Callable[[str], FileObject | None]) -> str | None:
    """Why ``batch`` cannot stand in for a new one, or ``None`` when it can.

    Reusable: a batch still running, or completed with results that still exist. Not: a failed, expired,
    cancelled or cancelling one (running the task again is meant to try again), a completed one in which
    every request failed (it would fail the task again at once), or one whose output file is gone.

    :param output_file: looks a file up; ``None`` when the service no longer has it.
    """
    status = batch.status
    # ``cancelling`` is not terminal, but it can only end ``cancelled``: not worth waiting on either.
    if status is BatchStatus.CANCELLING or (status.is_terminal and not status.is_success):
        return f"it is {status.value}"
    if not status.is_success:
        return None  # still running: wait for it rather than pay for it twice
    counts = batch.request_counts
    if counts.total and not counts.completed:
        return f"every one of its {counts.total} requests failed"
    if not batch.output_file_id:
        return "it has no output file"
    file = output_file(batch.output_file_id)
    if file is None:
        return f"its output file {batch.output_file_id} no longer exists (expired or deleted)"
    if file.expires_at is not None and file.expires_at <= time.time():
        return f"its output file {batch.output_file_id} expired"
    return None
