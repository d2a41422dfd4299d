"""Helpers shared by the emulator tests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import requests

from airflow_provider_openai_batch.emulator import EmulatorServer

FILE_KEYS = {"id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"}
BATCH_KEYS = {
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "usage",
    "metadata",
}
LIST_KEYS = {"object", "data", "first_id", "last_id", "has_more"}
ERROR_KEYS = {"message", "type", "param", "code"}
USAGE_KEYS = {"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"}
STAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def chat_line(custom_id: str, text: str, model: str = "gpt-4o-mini", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return "".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines).encode()


def chat_jsonl(n: int, model: str = "gpt-4o-mini") -> bytes:
    return jsonl([chat_line(f"req-{i}", f"prompt number {i}", model) for i in range(n)])


def echo(prompt: str) -> str:
    return "echo:" + hashlib.sha256(prompt.encode()).hexdigest()[:12] + " " + prompt[:64]


def tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


def upload(
    s: requests.Session,
    emu: EmulatorServer,
    content: bytes,
    filename: str = "input.jsonl",
    purpose: str = "batch",
    **fields: str,
) -> dict[str, Any]:
    r = s.post(f"{emu.base_url}/files", files={"file": (filename, content)}, data={"purpose": purpose, **fields})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def create(
    s: requests.Session,
    emu: EmulatorServer,
    file_id: str,
    endpoint: str = "/v1/chat/completions",
    metadata: dict[str, str] | None = None,
    expect: int = 200,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra}
    if metadata is not None:
        payload["metadata"] = metadata
    r = s.post(f"{emu.base_url}/batches", json=payload)
    assert r.status_code == expect, r.text
    body: dict[str, Any] = r.json()
    return body


def submit(
    s: requests.Session,
    emu: EmulatorServer,
    content: bytes,
    endpoint: str = "/v1/chat/completions",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    f = upload(s, emu, content)
    return create(s, emu, f["id"], endpoint=endpoint, metadata=metadata)


def get_batch(s: requests.Session, emu: EmulatorServer, batch_id: str) -> dict[str, Any]:
    r = s.get(f"{emu.base_url}/batches/{batch_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def content_lines(s: requests.Session, emu: EmulatorServer, file_id: str) -> list[dict[str, Any]]:
    r = s.get(f"{emu.base_url}/files/{file_id}/content")
    assert r.status_code == 200, r.text
    return [json.loads(x) for x in r.content.decode().splitlines()]


def assert_error(r: requests.Response, status: int, *, type_: str = "invalid_request_error") -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert set(err) == ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == type_
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    return err


def assert_file_object(obj: dict[str, Any]) -> None:
    assert set(obj) == FILE_KEYS
    assert obj["id"].startswith("file-")
    assert obj["object"] == "file"
    assert isinstance(obj["bytes"], int)
    assert isinstance(obj["created_at"], int)
    assert obj["expires_at"] is None or isinstance(obj["expires_at"], int)
    assert isinstance(obj["filename"], str)
    assert obj["purpose"] in {"assistants", "batch", "batch_output", "fine-tune", "vision", "user_data", "evals"}
    assert obj["status"] == "processed"
    assert obj["status_details"] is None


def assert_batch_object(obj: dict[str, Any]) -> None:
    assert set(obj) == BATCH_KEYS
    assert obj["id"].startswith("batch_")
    assert obj["object"] == "batch"
    assert obj["completion_window"] == "24h"
    assert obj["status"] in {
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    }
    assert isinstance(obj["created_at"], int)
    assert obj["expires_at"] == obj["created_at"] + 86400
    for key in STAMPS:
        assert obj[key] is None or isinstance(obj[key], int), key
    assert set(obj["request_counts"]) == {"total", "completed", "failed"}
    assert all(isinstance(v, int) for v in obj["request_counts"].values())
    if obj["usage"] is not None:
        assert set(obj["usage"]) == USAGE_KEYS
        assert set(obj["usage"]["input_tokens_details"]) == {"cached_tokens"}
        assert set(obj["usage"]["output_tokens_details"]) == {"reasoning_tokens"}
        u = obj["usage"]
        assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    if obj["errors"] is not None:
        assert set(obj["errors"]) == {"object", "data"}
        assert obj["errors"]["object"] == "list"
        for e in obj["errors"]["data"]:
            assert set(e) == {"code", "message", "param", "line"}
    for key in ("output_file_id", "error_file_id"):
        assert obj[key] is None or obj[key].startswith("file-")
    assert obj["metadata"] is None or isinstance(obj["metadata"], dict)
    assert obj["model"] is None or isinstance(obj["model"], str)
