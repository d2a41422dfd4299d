"""Measure event-loop stalls while many OpenAIBatchTriggers poll a slow server; print the figures as JSON.

Run in a fresh interpreter, as a triggerer is a process of its own: the test suite's heap (thousands of objects
from earlier tests) would otherwise lengthen every garbage collection that lands on the loop.

Nothing is warmed up first: the triggers start cold, as in a triggerer that was just started, and they are
started one per loop iteration, as Airflow's triggerer does.

Usage: ``python stall_probe.py BASE_URL N_TRIGGERS POLL_INTERVAL BLOCKED`` with the emulator already running at
BASE_URL; ``BLOCKED`` is the lateness in seconds from which a tick counts as blocked.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
from typing import Any

TICK = 0.005


def create_batches(n: int) -> list[str]:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

    hook = OpenAIBatchHook("openai_default")
    line = {
        "custom_id": "req-0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    uploaded = hook.upload_file(io.BytesIO((json.dumps(line) + "\n").encode()), filename="stall.jsonl")
    ids = [hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions").id for _ in range(n)]
    hook.close()
    return ids


async def measure(batch_ids: list[str], poll_interval: float, blocked: float) -> dict[str, Any]:
    from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

    wall: list[float] = []
    cpu: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while not stop.is_set():
            await asyncio.sleep(TICK)
            now, now_cpu = time.perf_counter(), time.thread_time()
            wall.append(now - last - TICK)
            cpu.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    async def one(batch_id: str) -> list[dict[str, Any]]:
        trigger = OpenAIBatchTrigger(conn_id="openai_default", batch_id=batch_id, poll_interval=poll_interval)
        return [event.payload async for event in trigger.run()]

    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    try:
        tasks = []
        for batch_id in batch_ids:
            tasks.append(asyncio.create_task(one(batch_id)))
            await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        stop.set()
        await tick_task
    return {
        "elapsed": time.perf_counter() - started,
        "ticks": len(wall),
        "worst_cpu": max(cpu),
        "worst_wall": max(wall),
        "p99_wall": sorted(wall)[int(0.99 * (len(wall) - 1))],
        "blocked": sum(1 for late in wall if late >= blocked),
        "events": [events[0] if len(events) == 1 else {"count": len(events)} for events in results],
    }


def main() -> None:
    base_url, n, poll_interval, blocked = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
        {"conn_type": "openai_batch", "password": "sk-emulator", "host": base_url}
    )
    batch_ids = create_batches(n)
    result = asyncio.run(measure(batch_ids, poll_interval, blocked))
    print("STALL " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
