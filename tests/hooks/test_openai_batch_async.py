"""The asynchronous twins of OpenAIBatchHook (httpx), against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    AuthenticationError,
    InvalidResponseError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.models import BatchStatus
from tests._kit.http_server import API_KEY, LocalServer, RequestHandler, batch_payload


def answers(*replies: tuple[int, object, dict[str, str]]) -> Callable[[RequestHandler], None]:
    """Reply with each ``(status, payload, headers)`` in turn; the last one repeats."""
    queue = list(replies)

    def handler(req: RequestHandler) -> None:
        req.read_body()
        status, payload, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(payload, bytes):
            req.send_response(status)
            req.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                req.send_header(name, value)
            req.end_headers()
            req.wfile.write(payload)
        else:
            req.send_json(status, payload, headers)

    return handler


def hits(server: LocalServer, method: str, path: str) -> list[tuple[str, str, dict[str, str]]]:
    return [r for r in server.requests if r[0] == method and r[1].split("?")[0] == "/v1" + path]


@pytest.fixture
def ahook(server: LocalServer, set_conn: Callable[..., None]) -> OpenAIBatchHook:
    set_conn(host=server.url, max_retries=3, organization="org-a", project="proj_a")
    return OpenAIBatchHook()


async def test_aretrieve_batch(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route("GET", "/batches/batch_1", answers((200, batch_payload("batch_1", status="finalizing"), {})))
    batch = await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert batch.id == "batch_1"
    assert batch.status is BatchStatus.FINALIZING
    ((method, path, headers),) = server.requests
    assert (method, path) == ("GET", "/v1/batches/batch_1")
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Accept"] == "application/json"
    assert headers["OpenAI-Organization"] == "org-a"
    assert headers["OpenAI-Project"] == "proj_a"
    assert headers["User-Agent"].startswith("airflow-provider-openai-batch/")


async def test_acancel_batch_sends_no_body(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    bodies: list[bytes] = []

    def on_cancel(req: RequestHandler) -> None:
        bodies.append(req.read_body())
        req.send_json(200, batch_payload("batch_1", status="cancelling"))

    server.route("POST", "/batches/batch_1/cancel", on_cancel)
    batch = await ahook.acancel_batch("batch_1")
    await ahook.aclose()
    assert batch.status is BatchStatus.CANCELLING
    assert bodies == [b""]
    assert "Content-Type" not in hits(server, "POST", "/batches/batch_1/cancel")[0][2]


async def test_acancel_conflict_returns_the_current_batch(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    conflict = {"error": {"message": "Cannot cancel a batch with status 'completed'.", "type": "invalid_request_error"}}
    server.route("POST", "/batches/batch_1/cancel", answers((409, conflict, {})))
    server.route("GET", "/batches/batch_1", answers((200, batch_payload("batch_1", status="completed"), {})))
    batch = await ahook.acancel_batch("batch_1")
    await ahook.aclose()
    assert batch.status is BatchStatus.COMPLETED
    assert [r[:2] for r in server.requests] == [("POST", "/v1/batches/batch_1/cancel"), ("GET", "/v1/batches/batch_1")]


async def test_azure_mode(server: LocalServer, set_conn: Callable[..., None]) -> None:
    set_conn(host=server.url, api_type="azure", api_version="2025-04-01-preview")
    server.route("GET", "/batches/batch_1", answers((200, batch_payload("batch_1", status="Validating"), {})))
    hook = OpenAIBatchHook()
    assert (await hook.aretrieve_batch("batch_1")).status is BatchStatus.VALIDATING
    await hook.aclose()
    ((_, path, headers),) = server.requests
    assert parse_qs(urlsplit(path).query) == {"api-version": ["2025-04-01-preview"]}
    assert headers["api-key"] == API_KEY
    assert "Authorization" not in headers


async def test_retries_503_then_succeeds(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route(
        "GET",
        "/batches/batch_1",
        answers(
            (503, {"error": {"message": "overloaded", "type": "server_error"}}, {}),
            (502, b"<html>bad gateway</html>", {}),
            (200, batch_payload("batch_1"), {}),
        ),
    )
    assert (await ahook.aretrieve_batch("batch_1")).id == "batch_1"
    await ahook.aclose()
    assert len(hits(server, "GET", "/batches/batch_1")) == 3


async def test_retry_after_is_awaited_without_blocking_the_loop(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route(
        "GET",
        "/batches/batch_1",
        answers((429, {"error": {"message": "slow", "type": "requests"}}, {"retry-after-ms": "500"}),
                (200, batch_payload("batch_1"), {})),
    )  # fmt: skip
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await ahook.aretrieve_batch("batch_1")
    elapsed = time.monotonic() - started
    task.cancel()
    await ahook.aclose()
    assert elapsed >= 0.5
    assert ticks >= 20  # the loop kept running during the wait


async def test_persistent_500_gives_up_after_max_retries_plus_one(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route("GET", "/batches/batch_1", answers((500, {"error": {"message": "boom", "type": "server_error"}}, {})))
    with pytest.raises(ServerError, match="boom"):
        await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert len(hits(server, "GET", "/batches/batch_1")) == 4


async def test_404_fails_fast(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    error = {"error": {"message": "No batch found", "type": "invalid_request_error", "param": "id", "code": None}}
    server.route("GET", "/batches/batch_1", answers((404, error, {"x-request-id": "req_404"})))
    started = time.monotonic()
    with pytest.raises(NotFoundError) as info:
        await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert time.monotonic() - started < 1.0
    assert len(server.requests) == 1
    assert (info.value.status_code, info.value.param, info.value.request_id) == (404, "id", "req_404")


async def test_insufficient_quota_fails_fast(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    quota = {"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}}
    server.route("GET", "/batches/batch_1", answers((429, quota, {})))
    with pytest.raises(QuotaExceededError):
        await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert len(server.requests) == 1


async def test_long_retry_after_gives_up_at_once(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route("GET", "/batches/batch_1", answers((429, {"error": {"message": "x"}}, {"Retry-After": "3600"})))
    with pytest.raises(RateLimitError):
        await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert len(server.requests) == 1


async def test_invalid_json_body_is_retried_then_raised(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route("GET", "/batches/batch_1", answers((200, b'{"id": "batch_1", "sta', {})))
    with pytest.raises(InvalidResponseError):
        await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert len(server.requests) == 4


async def test_one_tcp_connection_for_ten_polls(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    server.route("GET", "/batches/batch_1", answers((200, batch_payload("batch_1"), {})))
    for _ in range(10):
        assert (await ahook.aretrieve_batch("batch_1")).id == "batch_1"
    client = ahook._async_client
    assert client is not None
    await ahook.aclose()
    assert len(server.requests) == 10
    assert server.connections == 1
    assert client.is_closed
    assert ahook._async_client is None
    await ahook.aclose()  # idempotent
    # a closed hook opens a fresh client on the next call
    await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert server.connections == 2


async def test_connection_refused_raises_after_retries_in_bounded_time(
    set_conn: Callable[..., None], closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_openai_batch")
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    set_conn(host=f"http://127.0.0.1:{closed_port}/v1", max_retries=2, connect_timeout=1)
    hook = OpenAIBatchHook()
    started = time.monotonic()
    with pytest.raises(APIConnectionError) as info:
        await hook.aretrieve_batch("batch_1")
    await hook.aclose()
    assert time.monotonic() - started < 5.0
    assert info.value.reached_server is False
    assert "after 2 retries" in str(info.value)
    assert API_KEY not in str(info.value) + repr(info.value) + caplog.text


async def test_401_echoing_the_key_is_redacted(
    server: LocalServer, ahook: OpenAIBatchHook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_openai_batch")
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    error = {"error": {"message": f"Incorrect API key provided: {API_KEY}", "type": "invalid_request_error",
                       "param": None, "code": "invalid_api_key"}}  # fmt: skip
    server.route("POST", "/batches/batch_1/cancel", answers((401, error, {})))
    with pytest.raises(AuthenticationError) as info:
        await ahook.acancel_batch("batch_1")
    await ahook.aclose()
    assert "Incorrect API key provided" in str(info.value)
    assert API_KEY not in str(info.value) + repr(info.value) + caplog.text


async def test_invalid_json_echoing_the_key_is_redacted(
    server: LocalServer, ahook: OpenAIBatchHook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_openai_batch")
    server.route("GET", "/batches/batch_1", answers((200, f"<pre>Authorization: Bearer {API_KEY}</pre>".encode(), {})))
    with pytest.raises(InvalidResponseError) as info:
        await ahook.aretrieve_batch("batch_1")
    await ahook.aclose()
    assert "<pre>Authorization" in str(info.value)
    assert API_KEY not in str(info.value) + repr(info.value) + caplog.text


async def test_async_settings_are_looked_up_once(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    first = await ahook.aget_settings()
    assert await ahook.aget_settings() is first
    assert first.base_url == server.url
    assert first.organization == "org-a"


async def test_polls_leave_no_cyclic_garbage(server: LocalServer, ahook: OpenAIBatchHook) -> None:
    """A poll's objects are freed by reference counting, not left for the cyclic collector.

    httpx links each response and its stream in a cycle; left alone, hundreds of triggers feed full garbage
    collections that stall the triggerer's loop. Only the client's own objects are counted here.
    """
    server.route("GET", "/batches/batch_1", answers(*[(200, batch_payload("batch_1"), {})] * 25))
    for _ in range(5):
        await ahook.aretrieve_batch("batch_1")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.disable()
    try:
        for _ in range(20):
            await ahook.aretrieve_batch("batch_1")
        gc.collect()
        cyclic = [o for o in gc.garbage if type(o).__module__.split(".")[0] in ("httpx", "httpcore", "anyio")]
    finally:
        gc.set_debug(0)
        gc.enable()
        gc.garbage.clear()
    assert cyclic == [], f"{len(cyclic)} objects of 20 polls needed the cyclic collector"
