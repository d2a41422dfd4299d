"""The description of one API call, independent of the HTTP client that sends it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ApiRequest", "TransportFailure"]

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
