"""Event-loop stall bound: 200+ triggers polling concurrently must never block the loop for long.

The emulator runs in a separate process here: in-process it would compete for the GIL with the event loop,
and its stalls would be counted against the trigger.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers.batch import EVENT_TERMINAL, OpenAIBatchTrigger

N_TRIGGERS = int(os.environ.get("STALL_TEST_TRIGGERS", "200"))
MAX_STALL = 0.020
TICK = 0.005
LATENCY = 0.25
# 200 triggers polling every second through a 250 ms server: ~160 polls/s, 60x the rate of 200 triggers at
# the default 60 s interval.
POLL_INTERVAL = 1.0
ENDPOINT = "/v1/chat/completions"


@pytest.fixture
def subprocess_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An emulator in its own process (phases of 2 s, 0.25 s latency on every batch GET); yields its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_openai_batch.emulator",
            "--port",
            "0",
            "--phase-seconds",
            "2",
            "--fault",
            f"GET /v1/batches/{{id}}:latency={LATENCY}:times=forever",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        prefix = "OpenAI Batch emulator listening on "
        assert first.startswith(prefix), (first, proc.stderr.read() if proc.poll() is not None else "")
        base_url = first[len(prefix) :]
        monkeypatch.setenv(
            "AIRFLOW_CONN_OPENAI_DEFAULT",
            json.dumps(
                {
                    "conn_type": "openai_batch",
                    "password": "sk-emulator",
                    "host": base_url,
                    "extra": {"backoff_factor": 0.01, "backoff_max": 0.05},
                }
            ),
        )
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _create_batches(n: int) -> list[str]:
    hook = OpenAIBatchHook("openai_default")
    line = {
        "custom_id": "req-0",
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    path_bytes = (json.dumps(line) + "\n").encode()
    import io

    uploaded = hook.upload_file(io.BytesIO(path_bytes), filename="stall.jsonl")
    ids = [hook.create_batch(input_file_id=uploaded.id, endpoint=ENDPOINT).id for _ in range(n)]
    hook.close()
    return ids


async def _one_event(trigger: OpenAIBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


async def test_many_triggers_never_stall_the_event_loop(subprocess_emulator: str) -> None:
    batch_ids = await asyncio.to_thread(_create_batches, N_TRIGGERS)
    # Process warm-up, as in a triggerer that has been running a while: the first connection lookup and the
    # first async request import the Task SDK's connection machinery and anyio (0.1-0.3 s, once).
    hook = OpenAIBatchHook("openai_default")
    await hook.aretrieve_batch(batch_ids[0])
    await hook.aclose()
    await asyncio.to_thread(time.sleep, 0)
    # Airflow's and pytest's imports leave a heap whose full garbage collection takes ~80 ms on this machine,
    # whatever runs on the loop. Freeze it, as Airflow's long-running processes do, so that the collections
    # during the measurement are those of the garbage the triggers make.
    gc.collect()
    gc.freeze()
    try:
        baseline = max(await _tick_alone(1.0))
        wall, cpu, elapsed = await _run_with_ticker(batch_ids)
    finally:
        gc.unfreeze()
    worst_wall, worst_cpu = max(wall), max(cpu)
    p99_wall = sorted(wall)[int(0.99 * (len(wall) - 1))]
    print(
        f"\n{N_TRIGGERS} triggers in {elapsed:.1f}s, {len(wall)} ticks: worst loop stall {1000 * worst_cpu:.1f} ms of "
        f"loop-thread CPU; wall-clock lateness worst {1000 * worst_wall:.1f} ms, p99 {1000 * p99_wall:.1f} ms; the "
        f"ticker alone: {1000 * baseline:.1f} ms"
    )
    # What the triggers run on the loop between two ticks, in CPU time: the stall they cause, whatever else the
    # host runs (a busy host delays the whole process, which is not a stall of the loop).
    assert worst_cpu < MAX_STALL, f"the loop ran {1000 * worst_cpu:.1f} ms without yielding ({N_TRIGGERS} triggers)"
    assert p99_wall < MAX_STALL, f"p99 loop lateness {1000 * p99_wall:.1f} ms with {N_TRIGGERS} triggers"


async def _tick_alone(seconds: float) -> list[float]:
    """The ticker's lateness with nothing else on the loop: what the host itself adds."""
    gaps: list[float] = []
    end = time.perf_counter() + seconds
    last = time.perf_counter()
    while last < end:
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        gaps.append(now - last - TICK)
        last = now
    return gaps


async def _run_with_ticker(batch_ids: list[str]) -> tuple[list[float], list[float], float]:
    """Run one trigger per batch beside a ticker; the ticker's lateness, in wall time and loop-thread CPU."""
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

    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    _one_event(OpenAIBatchTrigger(conn_id="openai_default", batch_id=b, poll_interval=POLL_INTERVAL))
                    for b in batch_ids
                )
            ),
            timeout=120,
        )
    finally:
        stop.set()
        await tick_task
    elapsed = time.perf_counter() - started
    assert all(len(events) == 1 and events[0]["status"] == EVENT_TERMINAL for events in results)
    assert all(events[0]["batch"]["status"] == "completed" for events in results)
    return wall, cpu, elapsed
