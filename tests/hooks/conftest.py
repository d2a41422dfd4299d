"""Fixtures of the hook tests: a connection in the environment and a tiny local HTTP server."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests._kit.http_server import API_KEY, BASE, LocalServer


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Put the ``openai_default`` connection in the environment: ``set_conn(host=..., **extra)``."""

    def _set(host: str = BASE, conn_type: str = "openai_batch", password: str | None = API_KEY, **extra: Any) -> None:
        extra.setdefault("backoff_factor", 0.01)
        conn: dict[str, Any] = {"conn_type": conn_type, "extra": extra}
        if host is not None:
            conn["host"] = host
        if password is not None:
            conn["password"] = password
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))

    return _set


@pytest.fixture
def conn(set_conn: Callable[..., None]) -> None:
    """The default connection: ``responses`` base URL, tiny backoff, 3 retries."""
    set_conn(max_retries=3)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """``responses`` intercepting every ``requests`` call; unmatched calls fail the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def hook(conn: None) -> Iterator[OpenAIBatchHook]:
    h = OpenAIBatchHook()
    try:
        yield h
    finally:
        h.close()
