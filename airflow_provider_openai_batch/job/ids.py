"""Reading a line's ``custom_id`` without parsing the whole line, when the line's shape allows it.

Parsing every line of a 450 MB job (embedding results are long float lists) would make reading ids the
slowest part of a merge. Input lines written by the builders, and result lines written by the API, start
with their ``custom_id`` (after the result's ``id``), so a match anchored at the line's start reads the
top-level key exactly; anything else falls back to a full parse.
"""

from __future__ import annotations

import json
import re

__all__ = ["leading_custom_id", "result_custom_id"]

_STRING = rb'"((?:[^"\\]|\\.)*)"'
_INPUT_ID = re.compile(rb'\s*\{\s*"custom_id"\s*:\s*' + _STRING)
_RESULT_ID = re.compile(rb'\s*\{\s*(?:"id"\s*:\s*(?:"(?:[^"\\]|\\.)*"|null)\s*,\s*)?"custom_id"\s*:\s*' + _STRING)


def _decode(raw: bytes) -> str:
    if b"\\" not in raw:
        return raw.decode("utf-8")
    value = json.loads(b'"' + raw + b'"')
    return value if isinstance(value, str) else ""


def leading_custom_id(line: bytes) -> str | None:
    """The ``custom_id`` when it is the line's first key, else ``None`` (the caller parses the line)."""
    match = _INPUT_ID.match(line)
    return _decode(match.group(1)) if match else None


def result_custom_id(line: bytes) -> str | None:
    """The ``custom_id`` of an output or error line; ``None`` when the line has none (or is not JSON)."""
    match = _RESULT_ID.match(line)
    if match:
        return _decode(match.group(1))
    try:
        data = json.loads(line)
    except ValueError:
        return None
    value = data.get("custom_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
