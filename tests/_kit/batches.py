"""Request lines and batches: what the operator, sensor, trigger and reliability tests submit to a running
emulator, and batch objects as the service returns them for the pure tests (:func:`batch`, no Airflow)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.models import Batch

if TYPE_CHECKING:
    from airflow_provider_openai_batch.emulator import EmulatorServer

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


def batch(
    batch_id: str,
    status: str,
    *,
    codes: tuple[str, ...] = (),
    completed: int = 0,
    failed: int = 0,
    total: int = 0,
    input_file_id: str | None = None,
) -> Batch:
    """A batch as the service returns it (``Batch.from_dict``), without a server: ``codes`` are its validation
    errors (``failed``), the counts its ``request_counts``."""
    data: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "status": status,
        "endpoint": ENDPOINT,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
    }
    if codes:
        data["errors"] = {"object": "list", "data": [{"code": code, "message": code} for code in codes]}
    if input_file_id is not None:
        data["input_file_id"] = input_file_id
    return Batch.from_dict(data)


def by_id(*batches: Batch) -> dict[str, Batch]:
    """Batches keyed by id, as the job decision reads them."""
    return {b.id: b for b in batches}


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
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook  # Airflow: only where used

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


def wait_for_completed(emulator: EmulatorServer, batch_id: str, completed: int, *, timeout: float = 10.0) -> None:
    """Poll the emulator's own view until at least ``completed`` requests of the batch are done (no fixed sleep:
    it returns as soon as they are, however fast or slow the emulator's phases run)."""
    deadline = time.monotonic() + timeout
    while emulator.get_batch(batch_id)["request_counts"]["completed"] < completed:
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} has fewer than {completed} completed requests")
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
        wait_for_completed(emulator, batch.id, n // 2)  # half the requests finish, so partial output exists
        emulator.store.cancel_batch(batch.id)
    else:
        raise ValueError(status)
    return Batch.from_dict(wait_for_status(emulator, batch.id, status))
