"""Shared fixtures: the emulator on loopback and an Airflow connection pointing at it.

Connections come from ``AIRFLOW_CONN_*`` environment variables, so no Airflow database is needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.connection import set_connection

pytest_plugins = ["airflow_provider_openai_batch.emulator.pytest_plugin"]


@pytest.fixture
def openai_conn(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The emulator, with ``openai_default`` pointing at it."""
    set_connection(monkeypatch, emulator.base_url)
    yield emulator


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests reach nothing but 127.0.0.1: never route loopback traffic through a proxy from the environment.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
