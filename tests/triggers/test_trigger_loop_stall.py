"""No blocking call on the event loop: 200 triggers polling a slow server, started cold in a fresh process.

A blocking call (a synchronous request, a lookup or an import that waits on the network or the disk) stalls
the loop for at least the server's latency, on every poll. The bound checked here is far above what a busy
machine adds (a stall of most of the latency, more than twice), so the test cannot fail on noise; the fine
figures (worst lag in milliseconds, CPU per poll) are measured by ``make bench``, not asserted here.

The emulator runs in a separate process: in-process it would compete for the GIL with the event loop,
and its stalls would be counted against the trigger.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_openai_batch.emulator.launch import command, launch
from airflow_provider_openai_batch.triggers.batch import EVENT_TERMINAL
from tests._kit.connection import set_connection

N_TRIGGERS = int(os.environ.get("STALL_TEST_TRIGGERS", "200"))
LATENCY = 0.5
#: A tick this late is a blocking call's stall (or, rarely, the machine's); a blocking trigger makes one a round.
BLOCKED = 0.8 * LATENCY
# 200 triggers polling every second through a 250 ms server: ~160 polls/s, 60x the rate of 200 triggers at
# the default 60 s interval.
POLL_INTERVAL = 1.0
ENDPOINT = "/v1/chat/completions"


@pytest.fixture
def subprocess_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An emulator in its own process (phases of 2 s, ``LATENCY`` on every batch GET); yields its base URL."""
    faults = [
        f"GET /v1/batches/{{id}}:latency={LATENCY}:times=forever",
        f"GET /v1/batches:latency={LATENCY}:times=forever",
    ]
    started = launch(command(phase_seconds=2, faults=faults))
    try:
        set_connection(monkeypatch, started.base_url)
        yield started.base_url
    finally:
        started.stop()


async def test_many_triggers_never_block_the_event_loop(subprocess_emulator: str) -> None:
    """200 triggers in one loop beside a 5 ms ticker; a blocking call shows as a tick late by most of the latency."""
    probe = Path(__file__).with_name("stall_probe.py")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(probe), subprocess_emulator, str(N_TRIGGERS), str(POLL_INTERVAL), str(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("STALL ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("STALL ") :])
    print(
        f"\n{N_TRIGGERS} triggers in {result['elapsed']:.1f}s, {result['ticks']} ticks: worst loop stall "
        f"{1000 * result['worst_cpu']:.1f} ms of loop-thread CPU; wall-clock lateness worst "
        f"{1000 * result['worst_wall']:.1f} ms, p99 {1000 * result['p99_wall']:.1f} ms; "
        f"{result['blocked']} tick(s) late by {1000 * BLOCKED:.0f} ms or more"
    )
    events = result["events"]
    assert len(events) == N_TRIGGERS
    assert all(e.get("status") == EVENT_TERMINAL and e["batch"]["status"] == "completed" for e in events)
    # The batches run ~5 s after the triggers start: a blocking poll would have stalled the loop in every round.
    assert result["elapsed"] > 3 * POLL_INTERVAL
    assert result["blocked"] <= 2, f"{result['blocked']} stalls of {1000 * BLOCKED:.0f} ms or more: a blocking call"
