"""An Airflow connection in the environment (``AIRFLOW_CONN_*``): no Airflow database needed."""

from __future__ import annotations

import json
from typing import Any

import pytest

#: The key the emulator accepts by default.
EMULATOR_KEY = "sk-emulator"


def connection_json(base_url: str, api_key: str = EMULATOR_KEY, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_*`` value for ``base_url``: fast retries unless ``extra`` overrides them."""
    extra.setdefault("backoff_factor", 0.01)
    extra.setdefault("backoff_max", 0.05)
    return json.dumps({"conn_type": "openai_batch", "password": api_key, "host": base_url, "extra": extra})


def set_connection(
    monkeypatch: pytest.MonkeyPatch,
    base_url: str,
    conn_id: str = "openai_default",
    *,
    api_key: str = EMULATOR_KEY,
    **extra: Any,
) -> None:
    """Point ``conn_id`` at ``base_url`` with ``api_key`` (the emulator's unless given)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(base_url, api_key, **extra))
