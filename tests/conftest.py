"""Shared fixtures: the emulator on loopback and an Airflow connection pointing at it.

Connections come from ``AIRFLOW_CONN_*`` environment variables, so no Airflow database is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer

pytest_plugins = ["airflow_provider_openai_batch.emulator.pytest_plugin"]

EMULATOR_KEY = "sk-emulator"


def set_connection(
    monkeypatch: pytest.MonkeyPatch, base_url: str, conn_id: str = "openai_default", **extra: Any
) -> None:
    """Point ``conn_id`` at ``base_url`` with the emulator's key; fast retries unless overridden."""
    extra.setdefault("backoff_factor", 0.01)
    extra.setdefault("backoff_max", 0.05)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "openai_batch", "password": EMULATOR_KEY, "host": base_url, "extra": extra}),
    )


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
