"""Checks of the arguments of a batch create, shared by the hook and the Create operator.

Everything here runs before anything is uploaded or billed, and names the argument that is wrong.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

__all__ = [
    "IDEMPOTENCY_METADATA_KEY",
    "MAX_ID_LENGTH",
    "MAX_METADATA_PAIRS",
    "MAX_USER_METADATA_PAIRS",
    "check_create_arguments",
    "check_id",
    "create_batch_body",
    "path_id",
    "validate_create_args",
    "validate_metadata",
    "validate_output_expires_after",
]

#: Batch metadata key under which a run-stable idempotency key is stored.
IDEMPOTENCY_METADATA_KEY = "airflow_idempotency_key"
#: Metadata pairs the API allows on a batch.
MAX_METADATA_PAIRS = 16
#: Pairs left to the user when the operator adds its idempotency tag.
MAX_USER_METADATA_PAIRS = MAX_METADATA_PAIRS - 1
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
#: Longest object id accepted. OpenAI's ids are ~30 characters; gateways' are longer (LiteLLM's managed file
#: ids are around 340), so the bound only stops absurd input, far below what any URL can carry.
MAX_ID_LENGTH = 2048


def check_id(kind: str, value: object) -> str:
    """Reject an id that cannot be one path segment of a URL, before it is put into one.

    Refused: empty, whitespace or control characters, ``/`` or ``\\``, ``.`` and ``..``, and more than
    :data:`MAX_ID_LENGTH` characters. Anything else is accepted (gateways make their own ids, often long and
    with ``=`` or ``+``) and percent-encoded by :func:`path_id`.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if any(char.isspace() for char in value) or not value.isprintable():
        raise ValueError(f"{kind} {value[:80]!r} is malformed: it contains whitespace or control characters")
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"{kind} {value[:80]!r} is malformed: an id has no '/' or '\\' and is not '.' or '..'")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{kind} is malformed: {len(value)} characters long; at most {MAX_ID_LENGTH} are accepted")
    return value


def path_id(kind: str, value: object) -> str:
    """A checked id, percent-encoded for use as one URL path segment."""
    return quote(check_id(kind, value), safe="-._~:@!$&'()*+,;=")


def validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Check batch metadata against the API's limits before anything is sent.

    :raises ValueError: naming the offending key.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping of strings, got {type(metadata).__name__}")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"metadata has {len(metadata)} pairs; the API allows at most {MAX_METADATA_PAIRS}")
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys must be non-empty strings, got {key!r}")
        if len(key) > MAX_METADATA_KEY:
            raise ValueError(f"metadata key {key[:20]!r}... is {len(key)} chars; at most {MAX_METADATA_KEY}")
        if not isinstance(value, str):
            raise ValueError(f"metadata value of {key!r} must be a string, got {type(value).__name__}")
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata value of {key!r} is {len(value)} chars; at most {MAX_METADATA_VALUE}")
        clean[key] = value
    return clean


_EXPIRES_SHAPE = "output_expires_after must be seconds or {'anchor': 'created_at', 'seconds': N}"
#: The one anchor OpenAI and Azure document: the output file's creation.
_EXPIRES_ANCHOR = "created_at"


def _whole_number(text: str) -> int | None:
    """The integer a template rendered as text (``"86400"``), ``None`` when the text is not one (ASCII digits only)."""
    digits = text.strip()
    return int(digits) if re.fullmatch(r"-?[0-9]+", digits) else None


def validate_output_expires_after(value: Mapping[str, Any] | int | str | None) -> dict[str, Any] | None:
    """Accept ``{"anchor": "created_at", "seconds": N}`` or a plain number of seconds; return the body field.

    Also as a template renders them: an integer string (``"3600"``), a JSON object string, or a mapping whose
    ``seconds`` rendered as a string (``{"seconds": "{{ ... }}"}`` gives ``"86400"``); seconds are sent as an
    integer whatever the form. An empty string (a template that rendered nothing) means none.

    :raises ValueError: naming the field when the shape is wrong. The seconds range is left to the server,
        which differs between OpenAI (1 h - 30 d) and Azure (14 d - 30 d).
    """
    if isinstance(value, str):
        # What a template renders: "3600", or '{"anchor": "created_at", "seconds": 3600}'.
        text = value.strip()
        if not text:  # a template that rendered nothing: no expiry (json.loads would call it invalid)
            return None
        number = _whole_number(text)
        try:
            value = number if number is not None else json.loads(text)
        except ValueError:
            raise ValueError(f"{_EXPIRES_SHAPE}, got the string {text[:80]!r}") from None
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(_EXPIRES_SHAPE)
    if isinstance(value, int):
        value = {"anchor": _EXPIRES_ANCHOR, "seconds": value}
    if not isinstance(value, Mapping) or set(value) - {"anchor", "seconds"}:
        raise ValueError(_EXPIRES_SHAPE)
    anchor = value.get("anchor", _EXPIRES_ANCHOR)
    if anchor != _EXPIRES_ANCHOR:
        raise ValueError(f"output_expires_after.anchor must be {_EXPIRES_ANCHOR!r}, got {anchor!r}")
    seconds = value.get("seconds")
    if isinstance(seconds, str):  # a rendered "86400"; anything else is reported as given
        number = _whole_number(seconds)
        seconds = seconds if number is None else number
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
        raise ValueError(f"output_expires_after.seconds must be a positive integer, got {seconds!r}")
    return {"anchor": anchor, "seconds": seconds}


def validate_create_args(
    *,
    endpoint: object,
    completion_window: object,
    metadata: Mapping[str, Any] | None,
    output_expires_after: Mapping[str, Any] | int | str | None,
    tagged: bool,
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Check what a batch create sends, before any upload; return the clean metadata and expiry.

    :param tagged: the create adds the idempotency tag, so one metadata pair must stay free for it.
    :raises ValueError: naming the argument that is wrong.
    """
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise ValueError(f"endpoint must be an API path such as '/v1/chat/completions', got {endpoint!r}")
    if not isinstance(completion_window, str) or not completion_window.strip():
        raise ValueError(f"completion_window must be a non-empty string such as '24h', got {completion_window!r}")
    clean = validate_metadata(metadata) or {}
    if IDEMPOTENCY_METADATA_KEY in clean:
        raise ValueError(
            f"metadata key {IDEMPOTENCY_METADATA_KEY!r} is reserved: the provider stores its idempotency tag "
            "under it, so that a retry reuses the batch instead of billing another. Use another key."
        )
    if tagged and len(clean) > MAX_USER_METADATA_PAIRS:
        raise ValueError(
            f"metadata has {len(clean)} pairs; at most {MAX_USER_METADATA_PAIRS} leave room for the idempotency tag"
        )
    return clean, validate_output_expires_after(output_expires_after)


def check_create_arguments(
    endpoint: object, metadata: Any, output_expires_after: Any, completion_window: object = "24h"
) -> None:
    """What a create task checks before anything is uploaded or billed: one metadata pair stays free for its tag.

    :raises ValueError: naming the argument.
    """
    validate_create_args(
        endpoint=endpoint,
        completion_window=completion_window,
        metadata=metadata,
        output_expires_after=output_expires_after,
        tagged=True,
    )


def create_batch_body(
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: Mapping[str, Any] | None,
    output_expires_after: Mapping[str, Any] | int | str | None,
    idempotency_key: str | None,
) -> tuple[dict[str, Any], str | None]:
    """The checked JSON body of ``POST /batches``, and the key it is tagged with.

    :param idempotency_key: the caller's run-stable key. Without one, a per-call key (when a metadata pair is
        free) still lets an ambiguous failure of this call be resolved safely.
    :raises ValueError: naming the argument that is wrong.
    """
    check_id("input_file_id", input_file_id)
    tags, expires = validate_create_args(
        endpoint=endpoint,
        completion_window=completion_window,
        metadata=metadata,
        output_expires_after=output_expires_after,
        tagged=idempotency_key is not None,
    )
    key = idempotency_key
    if key is None and len(tags) < MAX_METADATA_PAIRS:
        key = f"call-{uuid.uuid4().hex}"
    if key is not None:
        tags[IDEMPOTENCY_METADATA_KEY] = key
    body: dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if tags:
        body["metadata"] = tags
    if expires is not None:
        body["output_expires_after"] = expires
    return body, key
