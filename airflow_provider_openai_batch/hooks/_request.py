"""The description of one API call, independent of the HTTP client that sends it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_openai_batch.hooks.validation import check_id, path_id

__all__ = ["ApiRequest", "TransportFailure", "cancel_request", "list_request", "retrieve_request"]

#: How a send failed without a usable response: ``connect`` never reached the server; the others may have.
TransportFailure = Literal["connect", "read", "timeout"]


@dataclass(frozen=True)
class ApiRequest:
    """One API call, described independently of the HTTP client that sends it.

    :param method: HTTP method.
    :param path: path relative to the base URL, starting with ``/`` (ids already percent-encoded).
    :param params: query parameters (``None`` values dropped).
    :param json: JSON body, if any (``None``: no body).
    :param idempotent: whether sending it twice is harmless; decides which failures are retried.
    :param stream: keep the body unread so that it can be streamed (file content).
    :param accept: the ``Accept`` header.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    idempotent: bool = True
    stream: bool = False
    accept: str = "application/json"


def retrieve_request(batch_id: str) -> ApiRequest:
    """``GET /batches/{id}``: the same description for the sync and the async send loop."""
    return ApiRequest("GET", f"/batches/{path_id('batch_id', batch_id)}")


def cancel_request(batch_id: str) -> ApiRequest:
    """``POST /batches/{id}/cancel``."""
    # No body, as the service documents it and the official SDK sends it.
    return ApiRequest("POST", f"/batches/{path_id('batch_id', batch_id)}/cancel")


def list_request(after: str | None, limit: int) -> ApiRequest:
    """``GET /batches``, one page of at most ``limit`` (1-100) batches after the batch id ``after``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ValueError(f"limit must be an integer between 1 and 100, got {limit!r}")
    if after is not None:
        check_id("after", after)
    return ApiRequest("GET", "/batches", params={"after": after, "limit": limit})
