"""Builders of input lines and checks shared by the batch_input tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import (
    validate_batch_input,
)
from airflow_provider_openai_batch.exceptions import BatchInputError

CHAT = "/v1/chat/completions"

MODEL = "gpt-4o-mini"


def req(custom_id: Any = "req-1", **overrides: Any) -> dict[str, Any]:
    """An input line's object; ``overrides`` replace keys, a value of ``...`` removes one."""
    obj: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    }
    if custom_id is ...:
        del obj["custom_id"]
    for key, value in overrides.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def line(custom_id: Any = "req-1", **overrides: Any) -> bytes:
    return json.dumps(req(custom_id, **overrides)).encode()


def body(model: Any = MODEL, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], **extra}
    if model is not ...:
        out["model"] = model
    return out


def lines(*items: bytes, end: bytes = b"\n") -> bytes:
    return b"\n".join(items) + end


def good(n: int, start: int = 1) -> list[bytes]:
    return [line(f"req-{i}") for i in range(start, start + n)]


def problems(exc: BatchInputError) -> list[tuple[int | None, str]]:
    return [(p.line, p.code) for p in exc.problems]


def check(tmp_path: Path, content: bytes, **kwargs: Any) -> BatchInputError:
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(path, **kwargs)
    return info.value


def check_path(path: Path, **kwargs: Any) -> BatchInputError:
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(path, **kwargs)
    return info.value


#: A minimal body of each endpoint in the registry (a new endpoint needs one here: tests/test_endpoints.py checks).
ENDPOINT_BODIES: dict[str, dict[str, Any]] = {
    CHAT: {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/responses": {"input": "hi"},
    "/v1/embeddings": {"input": "hi"},
}


def endpoint_request(custom_id: str, endpoint: str, *, model: str = MODEL, **fields: Any) -> dict[str, Any]:
    """An input line's object for ``endpoint``: its minimal body, with ``fields`` added or replacing."""
    body = {"model": model, **ENDPOINT_BODIES[endpoint], **fields}
    return {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}


def endpoint_line(custom_id: str, endpoint: str, *, model: str = MODEL, **fields: Any) -> bytes:
    """:func:`endpoint_request` as a JSONL line, without its newline (as :func:`line`; join with :func:`lines`)."""
    return json.dumps(endpoint_request(custom_id, endpoint, model=model, **fields)).encode()
