"""Crash and retry: a process running a task is SIGKILLed at the worst moment, then the task runs again.

The task runs in a forked process (Airflow is already imported, so a run costs milliseconds, not seconds of
imports) that is killed with SIGKILL: no ``finally``, no ``on_kill``, sockets torn down by the kernel. The
second run must find what the first one left (exactly one batch) and carry on with it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests._kit.batches import ENDPOINT, jsonl, write
from tests._kit.connection import set_connection
from tests._kit.reliability import REGISTRY, wait_until
from tests._kit.ti import FakeTI

_FORK = multiprocessing.get_context("fork")


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=0.1) as server:
        set_connection(monkeypatch, server.base_url)
        yield server


def _run_and_record(result: str, fn: Callable[[], Any]) -> None:
    # A forked child inherits asgiref's one-thread executor (used by Airflow's async connection lookup) but not
    # its thread: if this test process has used it, the child's lookups would queue forever. A triggerer is a
    # process of its own, so give the child a fresh executor as it would have.
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync

    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
    value = fn()
    Path(result).write_text(json.dumps(value))
    os._exit(0)


def _create_task(input_file: str, *, wait: bool, try_number: int = 1) -> Callable[[], Any]:
    def run() -> Any:
        op = OpenAIBatchCreateOperator(
            task_id="create",
            endpoint=ENDPOINT,
            input_file=input_file,
            wait_for_completion=wait,
            deferrable=False,
            poll_interval=0.05,
        )
        # The re-run after a crash is the next try: Airflow fails the dead one (heartbeat) and schedules another.
        ti = FakeTI(dag_id="crash_dag", task_id="create", run_id="scheduled__1", try_number=try_number)
        return {"return": op.execute({"ti": ti}), "xcoms": dict(ti.pushes)}  # type: ignore[arg-type]

    return run


def _sensor_task(batch_id: str) -> Callable[[], Any]:
    def run() -> Any:
        sensor = OpenAIBatchSensor(task_id="wait", batch_id=batch_id, deferrable=False, poke_interval=0.05, timeout=60)
        ti = FakeTI(dag_id="crash_dag", task_id="wait", run_id="scheduled__1")
        return {"return": sensor.execute({"ti": ti}), "xcoms": dict(ti.pushes)}  # type: ignore[arg-type]

    return run


def _trigger_task(batch_id: str) -> Callable[[], Any]:
    def run() -> Any:
        async def first_event() -> Any:
            trigger = OpenAIBatchTrigger(conn_id="openai_default", batch_id=batch_id, poll_interval=0.05)
            async for event in trigger.run():
                return event.payload
            return None

        return asyncio.run(first_event())

    return run


def _start(tmp_path: Path, fn: Callable[[], Any], name: str) -> tuple[Any, Path]:
    result = tmp_path / f"{name}.json"
    process = _FORK.Process(target=_run_and_record, args=(str(result), fn), daemon=True)
    process.start()
    return process, result


def _kill(process: Any) -> None:
    process.kill()  # SIGKILL
    process.join(10)
    assert process.exitcode == -9, f"the task process was not killed (exit code {process.exitcode})"


def _run_to_end(tmp_path: Path, fn: Callable[[], Any], name: str, timeout: float = 30.0) -> Any:
    process, result = _start(tmp_path, fn, name)
    process.join(timeout)
    if process.is_alive():
        process.kill()
        raise AssertionError(f"the re-run {name} did not finish within {timeout}s")
    assert process.exitcode == 0, f"the re-run {name} failed (exit code {process.exitcode})"
    return json.loads(result.read_text())


def test_create_killed_while_waiting_for_the_answer(emu: EmulatorServer, tmp_path: Path) -> None:
    """Killed while the create is in flight; the server creates the batch after the process died."""
    source = str(write(tmp_path / "input.jsonl", jsonl(3)))
    slow = emu.faults.add("POST /v1/batches", "latency", latency=1.0, times=1)
    process, _ = _start(tmp_path, _create_task(source, wait=False), "first")
    wait_until(lambda: slow.seen >= 1, 30, "the create to reach the server")
    _kill(process)
    wait_until(lambda: emu.counters.batches_created == 1, 60, "the orphaned create to finish on the server")
    emu.faults.clear()

    out = _run_to_end(tmp_path, _create_task(source, wait=False, try_number=2), "second")
    REGISTRY.crash_runs += 1
    REGISTRY.duplicates_seen(emu.counters.batches_created - 1)
    REGISTRY.duplicates_seen(emu.counters.files_uploaded - 1)
    (only,) = emu.batches
    assert out["return"] == only and out["xcoms"]["batch_id"] == only
    assert emu.counters.batches_created == 1
    assert emu.counters.files_uploaded == 1  # the re-run found the batch before uploading again


def test_create_killed_right_after_the_batch_was_created(emu: EmulatorServer, tmp_path: Path) -> None:
    """Killed once the batch exists (mid-poll, waiting for completion); the re-run waits for that batch."""
    source = str(write(tmp_path / "input.jsonl", jsonl(3)))
    stuck = emu.faults.add("GET /v1/batches/{id}", "latency", latency=20, times=1)
    process, _ = _start(tmp_path, _create_task(source, wait=True), "first")
    wait_until(lambda: emu.counters.batches_created == 1 and stuck.seen >= 1, 30, "the batch to be created")
    _kill(process)
    emu.faults.clear()
    (created,) = emu.batches

    out = _run_to_end(tmp_path, _create_task(source, wait=True, try_number=2), "second")
    REGISTRY.crash_runs += 1
    REGISTRY.duplicates_seen(emu.counters.batches_created - 1)
    assert emu.counters.batches_created == 1 and list(emu.batches) == [created]
    assert out["return"] == created
    final = emu.get_batch(created)
    assert final["status"] == "completed"
    assert out["xcoms"]["output_file_id"] == final["output_file_id"]


def _completing_batch(emu: EmulatorServer) -> str:
    hook = OpenAIBatchHook()
    uploaded = hook.upload_file(write(Path(emu.data_dir) / "sensor-input.jsonl", jsonl(2)))
    return hook.create_batch(input_file_id=uploaded.id, endpoint=ENDPOINT).id


def test_sensor_killed_mid_poll(emu: EmulatorServer, tmp_path: Path) -> None:
    batch_id = _completing_batch(emu)
    stuck = emu.faults.add("GET /v1/batches/{id}", "latency", latency=20, times=1)
    process, _ = _start(tmp_path, _sensor_task(batch_id), "first")
    wait_until(lambda: stuck.seen >= 1, 30, "the sensor's poll to reach the server")
    _kill(process)
    emu.faults.clear()

    out = _run_to_end(tmp_path, _sensor_task(batch_id), "second")
    REGISTRY.crash_runs += 1
    REGISTRY.duplicates_seen(emu.counters.batches_created - 1)
    final = emu.get_batch(batch_id)
    assert final["status"] == "completed"
    assert out["return"] == final["output_file_id"] and out["xcoms"]["output_file_id"] == final["output_file_id"]
    assert emu.counters.batches_created == 1


def test_trigger_killed_mid_poll(emu: EmulatorServer, tmp_path: Path) -> None:
    """A triggerer dies while a poll is in flight; the trigger started again fires the same terminal event."""
    batch_id = _completing_batch(emu)
    stuck = emu.faults.add("GET /v1/batches/{id}", "latency", latency=20, times=1)
    process, _ = _start(tmp_path, _trigger_task(batch_id), "first")
    wait_until(lambda: stuck.seen >= 1, 30, "the trigger's poll to reach the server")
    _kill(process)
    emu.faults.clear()

    event = _run_to_end(tmp_path, _trigger_task(batch_id), "second")
    REGISTRY.crash_runs += 1
    final = emu.get_batch(batch_id)
    assert event["status"] == "terminal" and event["batch_id"] == batch_id
    assert event["batch"]["output_file_id"] == final["output_file_id"]
    assert emu.counters.batches_created == 1
