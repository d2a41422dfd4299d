"""Input and result lines for the job-layer tests (no server, no Airflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHAT = "/v1/chat/completions"


def request(i: int, *, model: str = "gpt-4o-mini", pad: int = 0, first_key: bool = True) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": f"prompt {i} " + "x" * pad}]}
    if first_key:
        return {"custom_id": f"req-{i}", "method": "POST", "url": CHAT, "body": body}
    return {"method": "POST", "url": CHAT, "body": body, "custom_id": f"req-{i}"}


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def answer(custom_id: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": "req", "body": {"answer": custom_id}},
        "error": None,
    }


def failure(custom_id: str, code: str = "invalid_request_error") -> dict[str, Any]:
    body = {"error": {"message": "bad", "type": code, "code": None}}
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": {"status_code": 400, "body": body}}


def ids_of(path: str | Path) -> list[str]:
    """The ``custom_id`` of every line of a JSONL file, in order (a blank line fails the test)."""
    return [json.loads(line)["custom_id"] for line in Path(path).read_text(encoding="utf-8").splitlines()]
