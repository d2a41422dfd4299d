"""Request lines and batches in a running emulator: what the operator, sensor, trigger and reliability tests submit."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.models import Batch

ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"


def chat_line(
    i: int, *, fail: bool = False, url: str = ENDPOINT, model: str = MODEL, custom_id: str | None = None
) -> dict[str, Any]:
    """Request line ``req-{i}``; ``fail`` makes the emulator answer it with a 400 in the error file."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"prompt {i}"}]}
    if fail:
        body["emulator_fail"] = True
    return {"custom_id": custom_id if custom_id is not None else f"req-{i}", "method": "POST", "url": url, "body": body}


def jsonl(n: int, *, failing: int = 0, **line: Any) -> bytes:
    """``n`` request lines (``line`` passed to :func:`chat_line`), the first ``failing`` of which the emulator fails."""
    return "".join(json.dumps(chat_line(i, fail=i < failing, **line)) + "\n" for i in range(n)).encode()


def invalid_jsonl(n: int = 3) -> bytes:
    """Input the server accepts as a file but fails in validation (url mismatch on line 2)."""
    lines = [chat_line(i) for i in range(n)]
    lines[1] = chat_line(1, url="/v1/embeddings")
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def write_jsonl(path: Path, n: int = 4, *, failing: int = 0) -> Path:
    return write(path, jsonl(n, failing=failing))


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def new_batch(
    n: int = 4,
    *,
    failing: int = 0,
    content: bytes | None = None,
    metadata: dict[str, str] | None = None,
    conn_id: str = "openai_default",
) -> Batch:
    """Upload an input and create a batch through the (synchronous) hook."""
    hook = OpenAIBatchHook(conn_id)
    data = content if content is not None else jsonl(n, failing=failing)
    uploaded = hook.upload_file(io.BytesIO(data), filename="input.jsonl")
    return hook.create_batch(input_file_id=uploaded.id, endpoint=ENDPOINT, metadata=metadata)


def wait_for_status(emulator: EmulatorServer, batch_id: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll the emulator's own view (no HTTP) until the batch has one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        batch = dict(emulator.get_batch(batch_id))
        if batch["status"] in statuses:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} is {batch['status']}, not one of {statuses}")
        time.sleep(0.02)


def batch_in_status(emulator: EmulatorServer, status: str, n: int = 4) -> Batch:
    """A batch that reached ``status`` (completed, failed, expired or cancelled) in the emulator."""
    if status == "completed":
        batch = new_batch(n, failing=1)
    elif status == "failed":
        batch = new_batch(content=invalid_jsonl(n))
    elif status == "expired":
        batch = new_batch(n, metadata={"emulator": "expire"})
    elif status == "cancelled":
        batch = new_batch(n, metadata={"emulator": "hold"})
        wait_for_status(emulator, batch.id, "in_progress")
        time.sleep(2 * emulator.phase_seconds)  # let half the requests finish, so partial output exists
        emulator.store.cancel_batch(batch.id)
    else:
        raise ValueError(status)
    return Batch.from_dict(wait_for_status(emulator, batch.id, status))
