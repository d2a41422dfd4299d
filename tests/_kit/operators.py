"""Operators built as the operator tests build them (fast polls, not deferrable), and the inputs they read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator
from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator
from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger
from tests._kit.airflow_compat import TaskDeferred
from tests._kit.batches import ENDPOINT, MODEL, chat_line
from tests._kit.ti import FakeTI, context


def create_op(**kwargs: Any) -> OpenAIBatchCreateOperator:
    """A Create operator polling every 50 ms in the worker; ``kwargs`` override or add arguments."""
    kwargs.setdefault("task_id", "create")
    kwargs.setdefault("endpoint", ENDPOINT)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return OpenAIBatchCreateOperator(**kwargs)


def job_op(tmp_path: Path, **kwargs: Any) -> OpenAIBatchJobOperator:
    """A Job operator reading ``tmp_path/in.jsonl`` into ``tmp_path/out``, polling every 50 ms in the worker."""
    kwargs.setdefault("task_id", "job")
    kwargs.setdefault("endpoint", ENDPOINT)
    kwargs.setdefault("input_file", tmp_path / "in.jsonl")
    kwargs.setdefault("destination", tmp_path / "out")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return OpenAIBatchJobOperator(**kwargs)


def run_trigger(trigger: OpenAIBatchJobTrigger) -> list[dict[str, Any]]:
    """Run a job trigger to its end (20 s at most) and return the payloads of its events."""

    async def drain() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(drain(), 20))


def run_deferred(op: Callable[[], Any], ti: FakeTI, *, budget_batches: int | None = None) -> tuple[dict[str, Any], int]:
    """Run a deferrable job (``op()`` builds its operator) to its end, each trigger run here; the manifest and
    the number of deferrals. ``budget_batches``: no trigger may wait on more batches than that."""
    with pytest.raises(TaskDeferred) as info:
        op().execute(context(ti))
    deferred, deferrals, manifest = info.value, 1, None
    while manifest is None:
        trigger = deferred.trigger
        assert isinstance(trigger, OpenAIBatchJobTrigger)
        assert 1 <= len(trigger.batch_ids) <= (budget_batches or len(trigger.batch_ids))
        (event,) = run_trigger(trigger)
        try:
            manifest = op().execute_complete(context(ti), event)
        except TaskDeferred as again:
            deferred, deferrals = again, deferrals + 1
            assert deferrals < 60
    return manifest, deferrals


def write_requests(path: Path, n: int, **body: Any) -> None:
    """``n`` chat request lines, each body updated with ``body``."""
    lines = []
    for i in range(n):
        line = chat_line(i)
        line["body"].update(body)
        lines.append(line)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def write_input(
    path: Path, n: int = 4, *, max_tokens: int | None = 32, model: str = MODEL, models: list[str] | None = None
) -> Path:
    """``n`` chat requests "Summarize ticket <i>" (or one per entry of ``models``)."""
    lines = []
    for i, name in enumerate(models or [model] * n):
        body: dict[str, Any] = {"model": name, "messages": [{"role": "user", "content": f"Summarize ticket {i}"}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        lines.append(json.dumps({"custom_id": f"t-{i}", "method": "POST", "url": ENDPOINT, "body": body}))
    path.write_text("\n".join(lines) + "\n")
    return path
