"""The batch endpoints, their one comparable form, and OpenAI's per-file limits."""

from __future__ import annotations

__all__ = ["CHAT_COMPLETIONS", "EMBEDDINGS", "MAX_INPUT_BYTES", "MAX_REQUESTS", "RESPONSES", "normalize_endpoint"]

#: Most requests one OpenAI batch input file may hold (Azure allows 100,000: pass ``max_requests``).
MAX_REQUESTS = 50_000
#: Largest batch input file OpenAI accepts: its documented "200 MB", read as MiB (the stricter reading
#: of the two would be 200,000,000 bytes; pass ``max_bytes`` to be more cautious).
MAX_INPUT_BYTES = 200 * 1024 * 1024

CHAT_COMPLETIONS = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"


def normalize_endpoint(url: str) -> str:
    """Return the ``/v1/...`` form of a batch endpoint or input-line ``url``.

    Azure shows endpoints and line urls without ``/v1`` (``/chat/completions``), OpenAI with it; both
    name the same endpoint, so they are compared in this one form.

    :param url: an endpoint such as ``/chat/completions``, ``/v1/chat/completions`` or ``v1/embeddings``.
    :raises ValueError: when ``url`` is not a non-empty string.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"An endpoint must be a non-empty string such as {CHAT_COMPLETIONS!r}, got {url!r}")
    path = url.strip()
    if not path.startswith("/"):
        path = "/" + path
    if path != "/v1" and not path.startswith("/v1/"):
        path = "/v1" + path
    return path
