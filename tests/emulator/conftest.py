"""Fixtures for the emulator tests (the same fixtures live in the emulator's pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from airflow_provider_openai_batch.emulator import EmulatorServer


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A keep-alive ``requests`` session sending the emulator's default key."""
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer sk-emulator"
        yield s


@pytest.fixture
def mc(manual_clock_emulator: EmulatorServer) -> EmulatorServer:
    return manual_clock_emulator
