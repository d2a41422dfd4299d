"""pytest fixtures for the emulator (register with ``-p airflow_provider_openai_batch.emulator.pytest_plugin``
or ``pytest_plugins = ["airflow_provider_openai_batch.emulator.pytest_plugin"]`` in a root conftest).

* ``emulator``: a started :class:`EmulatorServer` on real time (``phase_seconds=0.05``).
* ``manual_clock_emulator``: a started server driven by a :class:`ManualClock` (``server.clock``) with
  ``phase_seconds=10``; nothing moves until the test calls ``server.clock.advance(...)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import EmulatorServer, ManualClock


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=0.05) as server:
        yield server


@pytest.fixture
def manual_clock_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=10.0, clock=ManualClock()) as server:
        yield server
