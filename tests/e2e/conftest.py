"""The ``airflow`` fixture: one real Airflow 3 + emulator per test module (about 20-30 s to start)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests._kit.e2e_stack import AirflowStack


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    stack = AirflowStack(home=tmp_path_factory.mktemp("airflow-home"))
    started = time.monotonic()
    with stack.running():
        print(f"\nAirflow ready in {time.monotonic() - started:.1f}s at {stack.api_url} (home {stack.home})")
        yield stack
