"""What the emulator billed: how many times each line got an answer, across every batch it ever created."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from airflow_provider_openai_batch.emulator import EmulatorServer

_TERMINAL = {"completed", "failed", "expired", "cancelled"}


def answered_counts(emulator: EmulatorServer, *, settle: float = 10.0) -> Counter[str]:
    """``{custom_id: times answered}``: the 2xx result lines in the output and error files of every batch the
    emulator created, whoever created it and whatever became of it.

    Waits (up to ``settle`` seconds, on the emulator's own view) until every batch has ended first: a batch still
    running could answer a line later. A batch that never ends fails the test (a job left it running).
    """
    counts: Counter[str] = Counter()
    for batch in all_ended(emulator, settle):
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not file_id:
                continue
            for raw in emulator.file_content(str(file_id)).splitlines():
                line = json.loads(raw)
                status = (line.get("response") or {}).get("status_code")
                if isinstance(status, int) and 200 <= status < 300:
                    counts[str(line["custom_id"])] += 1
    return counts


def all_ended(emulator: EmulatorServer, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every batch of the emulator, once all have ended (polled on its own view, every 20 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        batches = [dict(b) for b in emulator.batches.values()]
        running = [b["id"] for b in batches if b["status"] not in _TERMINAL]
        if not running:
            return batches
        if time.monotonic() > deadline:
            raise AssertionError(f"batches still running after {timeout}s: {running}")
        time.sleep(0.02)


def run_twice(counts: Counter[str]) -> dict[str, int]:
    """The lines answered (billed) more than once, with how many times."""
    return {custom_id: n for custom_id, n in counts.items() if n > 1}
