"""The emulator in its own process: the one start command of ``make demo``, the e2e stack and the tests.

:func:`command` is the argv (``python -m airflow_provider_openai_batch.emulator`` on a free loopback port);
:func:`launch` starts it and returns once the emulator listens, which it says in one line, :data:`READY_PREFIX`
and its base URL, printed after binding. Like the rest of the emulator, the provider never imports this module.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The start of the one line the emulator prints once it listens; its base URL follows.
READY_PREFIX = "OpenAI Batch emulator listening on "


def command(
    *,
    python: str = sys.executable,
    api_key: str = "sk-emulator",
    phase_seconds: float = 0.5,
    data_dir: str | Path | None = None,
    faults: Sequence[str] = (),
    port: int = 0,
    options: Sequence[str] = (),
) -> list[str]:
    """The argv that starts the emulator on loopback (``port`` 0: a free one).

    :param python: the interpreter that runs it (another venv's, e.g. one with the built wheel installed).
    :param api_key: the only key it accepts.
    :param phase_seconds: time spent in each of validating, in_progress, finalizing and cancelling.
    :param data_dir: where it stores files (default: a temporary directory).
    :param faults: ``--fault`` rules (``python -m airflow_provider_openai_batch.emulator --help`` lists them).
    :param port: the port to bind; 0 lets the system pick a free one.
    :param options: more command-line options, as written (e.g. ``("--enqueued-request-limit", "20")``).
    """
    argv = [python, "-m", "airflow_provider_openai_batch.emulator", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--api-key", api_key, "--phase-seconds", str(phase_seconds)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    for spec in faults:
        argv += ["--fault", spec]
    return [*argv, *options]


@dataclass
class EmulatorProcess:
    """A started emulator: its process (leader of its own process group) and the base URL it answers on."""

    popen: subprocess.Popen[bytes]
    base_url: str

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited within ``grace`` seconds."""
        stop_group(self.popen, grace)


def launch(
    argv: Sequence[str], *, stderr: IO[bytes] | int | None = None, ready_timeout: float = 60.0
) -> EmulatorProcess:
    """Start the emulator with ``argv`` (from :func:`command`) and wait until it listens.

    :param stderr: where its log goes (a file opened for binary writing, ``subprocess.DEVNULL``...);
        default: this process's stderr.
    :param ready_timeout: seconds to wait for the ready line (generous: a busy machine imports slowly). If the
        process exits first, or stays silent that long, it is stopped and :class:`RuntimeError` says which.
    """
    # Its own process group, so that stopping it stops all of it; the argv comes from command(), no shell.
    popen = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)  # noqa: S603
    line = _first_line(popen, ready_timeout)
    if line is None:
        stop_group(popen, grace=5.0)
        raise RuntimeError(f"the emulator did not start within {ready_timeout:g}s (it printed nothing)")
    if not line.startswith(READY_PREFIX):
        stop_group(popen, grace=5.0)  # also collects the exit code of a process that already ended
        raise RuntimeError(f"the emulator exited with code {popen.returncode} before listening (output: {line!r})")
    return EmulatorProcess(popen, line[len(READY_PREFIX) :].strip())


def _first_line(popen: subprocess.Popen[bytes], timeout: float) -> str | None:
    """The first line ``popen`` prints ("" if it exits first), or None if it stays silent ``timeout`` seconds."""
    assert popen.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(popen.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                return popen.stdout.readline().decode(errors="replace")  # the line is printed whole, flushed
    return None


def stop_group(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM ``popen``'s process group, then SIGKILL it if it has not exited within ``grace`` seconds.

    Safe to call again: a process already reaped is left alone (its group id may belong to another by now).
    """
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=5)
    if popen.stdout is not None:
        popen.stdout.close()
