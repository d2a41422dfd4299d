"""Tolerant readers of the API's fields: explicit ``null``, ``""`` from Azure, numbers sent as strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _opt_str(value: object) -> str | None:
    # Azure has been seen sending "" where OpenAI sends null for absent file ids.
    if value is None or value == "":
        return None
    return str(value)


def _opt_int(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            # Older Azure examples carry ISO-8601 strings for timestamps, with 7 fractional digits
            # (which Python 3.10's fromisoformat rejects) and sometimes no offset (meaning UTC, not local time).
            import re
            from datetime import datetime, timezone

            text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return int(parsed.timestamp())
    return None


def _int(value: object) -> int:
    parsed = _opt_int(value)
    return 0 if parsed is None else parsed


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
