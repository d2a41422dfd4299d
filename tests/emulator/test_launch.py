"""The one start command: the emulator in its own process, ready when :func:`launch` returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from airflow_provider_openai_batch.emulator.launch import command, launch


def test_command_runs_the_emulator_module_on_loopback_with_every_option() -> None:
    argv = command(
        python="/venv/bin/python",
        api_key="sk-x",
        phase_seconds=0.25,
        data_dir="/data",
        faults=["POST /v1/batches:status=503", "*:drop"],
        options=["--enqueued-request-limit", "20"],
    )
    assert argv == [
        "/venv/bin/python",
        "-m",
        "airflow_provider_openai_batch.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        "sk-x",
        "--phase-seconds",
        "0.25",
        "--data-dir",
        "/data",
        "--fault",
        "POST /v1/batches:status=503",
        "--fault",
        "*:drop",
        "--enqueued-request-limit",
        "20",
    ]


def test_launch_returns_a_listening_emulator_that_stop_ends() -> None:
    started = launch(command(api_key="sk-launch", phase_seconds=0.05))
    try:
        assert started.base_url.startswith("http://127.0.0.1:")
        assert started.base_url.endswith("/v1")
        answer = requests.get(f"{started.base_url}/batches", headers={"Authorization": "Bearer sk-launch"}, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["object"] == "list"
    finally:
        started.stop()
    assert started.popen.returncode is not None
    started.stop()  # a second stop leaves the reaped process alone


def test_launch_names_the_failure_when_the_emulator_exits_before_listening() -> None:
    with pytest.raises(RuntimeError, match="the emulator exited with code 2 before listening"):
        launch(command(faults=["not a rule"]))


def test_launch_gives_up_on_a_process_that_never_says_it_listens(tmp_path: Path) -> None:
    # An "interpreter" that prints nothing and sleeps: the wait ends at the timeout and the process is stopped.
    silent = tmp_path / "silent-python"
    silent.write_text("#!/bin/sh\nexec sleep 600\n")
    silent.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"did not start within 0\.5s \(it printed nothing\)"):
        launch(command(python=str(silent)), ready_timeout=0.5)
