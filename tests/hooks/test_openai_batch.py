"""OpenAIBatchHook (synchronous): what goes on the wire, retries, idempotent creates, paging, connections, secrets.

The wire is observed with ``responses``; the base URL points at 127.0.0.1 and nothing leaves the machine.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from airflow_provider_openai_batch import __version__
from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidConnectionError,
    InvalidResponseError,
    NotFoundError,
    OpenAIBatchAPIError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY, OpenAIBatchHook
from airflow_provider_openai_batch.models import Batch, BatchStatus, DeletedFile, FileObject
from tests._kit.http_server import API_KEY, BASE, batch_payload, file_payload, page_payload

USER_AGENT = f"airflow-provider-openai-batch/{__version__}"


def query_of(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def path_of(call: Any) -> str:
    return urlsplit(call.request.url).path


def json_body(call: Any) -> Any:
    body = call.request.body
    return json.loads(body.decode() if isinstance(body, bytes) else body)


def calls_to(rsps: responses.RequestsMock, method: str, path: str) -> list[Any]:
    return [c for c in rsps.calls if c.request.method == method and path_of(c) == "/v1" + path]


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------------------------
# What goes on the wire
# ---------------------------------------------------------------------------------------------------------------


K16 = [f"k{i}" for i in range(16)]
K17 = [f"k{i}" for i in range(17)]


class TestWire:
    def test_retrieve_batch_request(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_abc123", json=batch_payload())
        batch = hook.retrieve_batch("batch_abc123")
        assert batch.id == "batch_abc123"
        assert batch.status is BatchStatus.IN_PROGRESS
        (call,) = rsps.calls
        assert call.request.method == "GET"
        assert call.request.url == f"{BASE}/batches/batch_abc123"
        headers = call.request.headers
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert headers["User-Agent"] == USER_AGENT
        assert headers["Accept"] == "application/json"
        assert "api-key" not in headers
        assert "OpenAI-Organization" not in headers
        assert "OpenAI-Project" not in headers
        assert call.request.body is None

    def test_organization_and_project_headers(
        self, set_conn: Callable[..., None], rsps: responses.RequestsMock
    ) -> None:
        set_conn(organization="org-abc", project="proj_xyz")
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        OpenAIBatchHook().retrieve_batch("batch_1")
        headers = rsps.calls[0].request.headers
        assert headers["OpenAI-Organization"] == "org-abc"
        assert headers["OpenAI-Project"] == "proj_xyz"
        assert headers["Authorization"] == f"Bearer {API_KEY}"

    def test_azure_mode_uses_api_key_header_and_api_version_on_every_call(
        self, set_conn: Callable[..., None], rsps: responses.RequestsMock
    ) -> None:
        base = "http://127.0.0.1:9/openai"
        set_conn(host=base, api_type="azure", api_version="2024-10-21")
        rsps.get(f"{base}/batches/batch_1", json=batch_payload("batch_1", status="Validating"))
        rsps.get(f"{base}/batches", json=page_payload([]))
        rsps.post(f"{base}/batches/batch_1/cancel", json=batch_payload("batch_1", status="cancelling"))
        rsps.get(f"{base}/files/file-1", json=file_payload("file-1"))
        hook = OpenAIBatchHook()
        assert hook.retrieve_batch("batch_1").status is BatchStatus.VALIDATING
        hook.list_batches(limit=5, after="batch_0")
        hook.cancel_batch("batch_1")
        hook.retrieve_file("file-1")
        assert len(rsps.calls) == 4
        for call in rsps.calls:
            assert query_of(call)["api-version"] == ["2024-10-21"]
            assert call.request.headers["api-key"] == API_KEY
            assert "Authorization" not in call.request.headers
        assert query_of(rsps.calls[1]) == {"limit": ["5"], "after": ["batch_0"], "api-version": ["2024-10-21"]}

    @pytest.mark.parametrize(
        ("kwargs", "expected"),
        [
            ({}, {"limit": ["20"]}),
            ({"limit": 1}, {"limit": ["1"]}),
            ({"limit": 100, "after": "batch_xyz"}, {"limit": ["100"], "after": ["batch_xyz"]}),
        ],
    )
    def test_list_batches_query(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, kwargs: dict[str, Any], expected: dict[str, Any]
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([batch_payload("batch_1")], has_more=True))
        page = hook.list_batches(**kwargs)
        assert [b.id for b in page.data] == ["batch_1"]
        assert page.has_more is True
        (call,) = rsps.calls
        assert path_of(call) == "/v1/batches"
        assert query_of(call) == expected

    def test_create_batch_body(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        rsps.post(f"{BASE}/batches", json=batch_payload("batch_new", status="validating"))
        batch = hook.create_batch(
            input_file_id="file-abc123",
            endpoint="/v1/chat/completions",
            metadata={"customer_id": "user_1", "run": "nightly"},
            output_expires_after=7200,
            idempotency_key="dag.task.run-1",
        )
        assert batch.id == "batch_new"
        (post,) = calls_to(rsps, "POST", "/batches")
        assert post.request.headers["Content-Type"] == "application/json"
        assert post.request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert post.request.headers["Accept"] == "application/json"
        assert json_body(post) == {
            "input_file_id": "file-abc123",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"customer_id": "user_1", "run": "nightly", IDEMPOTENCY_METADATA_KEY: "dag.task.run-1"},
            "output_expires_after": {"anchor": "created_at", "seconds": 7200},
        }
        assert urlsplit(post.request.url).query == ""

    def test_create_batch_without_key_tags_a_per_call_key_and_does_not_look_first(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.post(f"{BASE}/batches", json=batch_payload("batch_new", status="validating"))
        hook.create_batch(
            input_file_id="file-abc123",
            endpoint="/v1/embeddings",
            output_expires_after={"anchor": "created_at", "seconds": 3600},
        )
        assert [c.request.method for c in rsps.calls] == ["POST"]
        body = json_body(rsps.calls[0])
        assert re.fullmatch(r"call-[0-9a-f]{32}", body["metadata"][IDEMPOTENCY_METADATA_KEY])
        assert set(body["metadata"]) == {IDEMPOTENCY_METADATA_KEY}
        assert body["endpoint"] == "/v1/embeddings"
        assert body["output_expires_after"] == {"anchor": "created_at", "seconds": 3600}

    def test_cancel_sends_no_body(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.post(f"{BASE}/batches/batch_1/cancel", json=batch_payload("batch_1", status="cancelling"))
        batch = hook.cancel_batch("batch_1")
        assert batch.status is BatchStatus.CANCELLING
        (call,) = rsps.calls
        assert call.request.method == "POST"
        assert path_of(call) == "/v1/batches/batch_1/cancel"
        # As the service documents it and the official SDK sends it: no body, no Content-Type.
        assert not call.request.body
        assert "Content-Type" not in call.request.headers

    @pytest.mark.parametrize("expires", [None, 86400])
    def test_upload_multipart_fields_and_filename(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, tmp_path: Any, expires: int | None
    ) -> None:
        content = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' * 3
        source = tmp_path / "requests.jsonl"
        source.write_bytes(content)
        seen: dict[str, Any] = {}

        def on_upload(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            seen["headers"] = dict(request.headers)
            seen["body"] = request.body if isinstance(request.body, bytes) else request.body.read()  # type: ignore[union-attr]
            return 200, {}, json.dumps(file_payload("file-up1", bytes=len(content), filename="requests.jsonl"))

        rsps.add_callback("POST", f"{BASE}/files", callback=on_upload)
        uploaded = hook.upload_file(source, expires_after_seconds=expires)
        assert uploaded == FileObject.from_dict(file_payload("file-up1", bytes=len(content), filename="requests.jsonl"))

        headers, body = seen["headers"], seen["body"]
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
        assert int(headers["Content-Length"]) == len(body)
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
        )
        assert message.is_multipart()
        parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        expected_fields = ["purpose", "file"]
        if expires is not None:
            expected_fields = ["purpose", "expires_after[anchor]", "expires_after[seconds]", "file"]
        assert [part.get_param("name", header="content-disposition") for part in message.iter_parts()] == (
            expected_fields
        )
        assert parts["purpose"].get_payload(decode=True) == b"batch"
        assert parts["file"].get_filename() == "requests.jsonl"
        assert parts["file"].get_payload(decode=True) == content
        if expires is not None:
            assert parts["expires_after[anchor]"].get_payload(decode=True) == b"created_at"
            assert parts["expires_after[seconds]"].get_payload(decode=True) == b"86400"

    def test_upload_from_file_object_with_explicit_name(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        bodies: list[bytes] = []

        def on_upload(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            bodies.append(request.body)  # type: ignore[arg-type]
            return 200, {}, json.dumps(file_payload("file-up2"))

        rsps.add_callback("POST", f"{BASE}/files", callback=on_upload)
        handle = io.BytesIO(b"HEADER-NOT-SENT" + b'{"a": 1}\n')
        handle.seek(len(b"HEADER-NOT-SENT"))  # uploads from the current position
        hook.upload_file(handle, filename="in.jsonl", purpose="batch")
        assert b'filename="in.jsonl"' in bodies[0]
        assert b'{"a": 1}\n' in bodies[0]
        assert b"HEADER-NOT-SENT" not in bodies[0]

    def test_upload_missing_path_fails_before_any_request(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, tmp_path: Any
    ) -> None:
        with pytest.raises(FileNotFoundError):
            hook.upload_file(tmp_path / "nope.jsonl")
        assert len(rsps.calls) == 0

    def test_file_calls(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/files", json={"object": "list", "data": [file_payload("file-1"), file_payload("file-2")]})
        rsps.get(f"{BASE}/files/file-1", json=file_payload("file-1"))
        rsps.delete(f"{BASE}/files/file-1", json={"id": "file-1", "object": "file", "deleted": True})
        rsps.get(
            f"{BASE}/files/file-1/content",
            body=b'{"custom_id": "a", "response": {"status_code": 200, "body": {}}}\n\n{"custom_id": "b"}\n',
        )

        files = hook.list_files(purpose="batch", limit=50, order="asc", after="file-0")
        assert [f.id for f in files] == ["file-1", "file-2"]
        assert query_of(rsps.calls[0]) == {"purpose": ["batch"], "limit": ["50"], "order": ["asc"], "after": ["file-0"]}
        assert hook.retrieve_file("file-1").filename == "batch_input.jsonl"
        assert hook.delete_file("file-1") == DeletedFile(id="file-1", deleted=True)
        assert [(r.custom_id, r.status_code) for r in hook.iter_results("file-1")] == [("a", 200), ("b", None)]
        methods = [(c.request.method, path_of(c)) for c in rsps.calls]
        assert methods == [
            ("GET", "/v1/files"),
            ("GET", "/v1/files/file-1"),
            ("DELETE", "/v1/files/file-1"),
            ("GET", "/v1/files/file-1/content"),
        ]
        assert rsps.calls[3].request.headers["Accept"] == "application/binary"
        assert rsps.calls[3].request.headers["Authorization"] == f"Bearer {API_KEY}"

    def test_list_files_default_query(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/files", json={"object": "list", "data": [], "has_more": False})
        assert hook.list_files() == []
        assert query_of(rsps.calls[0]) == {"limit": ["100"], "order": ["desc"]}

    def test_iter_results_names_the_bad_line(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/files/file-1/content", body=b'{"custom_id": "a"}\n\nnot json\n')
        with pytest.raises(ValueError, match="file-1 line 3"):
            list(hook.iter_results("file-1"))

    @pytest.mark.parametrize(
        "call",
        [
            lambda h: h.retrieve_batch(""),
            lambda h: h.retrieve_batch("../files/x"),
            lambda h: h.retrieve_batch("batch 1"),
            lambda h: h.cancel_batch("batch/1"),
            lambda h: h.retrieve_file("file-" + "x" * 5000),  # longer than any URL path segment needs
            lambda h: h.delete_file(None),
            lambda h: h.list_batches(after="a/b"),
            lambda h: h.list_files(limit=0),
            lambda h: h.create_batch(input_file_id="", endpoint="/v1/chat/completions"),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="v1/chat/completions"),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", completion_window=" "),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", metadata=dict.fromkeys(K17, "v")),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", metadata=dict.fromkeys(K16, "v"),
                                     idempotency_key="k"),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", metadata={"k" * 65: "v"}),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", metadata={"k": "v" * 513}),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", metadata={"k": 1}),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", output_expires_after=0),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", output_expires_after=True),
            lambda h: h.create_batch(input_file_id="file-1", endpoint="/v1/x", output_expires_after={"days": 1}),
        ],
    )  # fmt: skip
    def test_invalid_arguments_fail_before_any_request(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, call: Callable[[OpenAIBatchHook], Any]
    ) -> None:
        with pytest.raises(ValueError):
            call(hook)
        assert len(rsps.calls) == 0


# ---------------------------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------------------------


class TestRetries:
    def test_429_retry_after_is_obeyed(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=429,
            json=error_body("slow down", "rate_limit_error"),
            headers={"Retry-After": "1"},
        )
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        started = time.monotonic()
        assert hook.retrieve_batch("batch_1").id == "batch_1"
        elapsed = time.monotonic() - started
        assert len(rsps.calls) == 2
        assert 1.0 <= elapsed < 3.0  # fmt: skip

    def test_retry_after_ms_is_obeyed(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=429, headers={"retry-after-ms": "400", "Retry-After": "30"})
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        started = time.monotonic()
        hook.retrieve_batch("batch_1")
        elapsed = time.monotonic() - started
        assert len(rsps.calls) == 2
        assert 0.4 <= elapsed < 2.0  # retry-after-ms wins over Retry-After

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_transient_status_then_success(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, status: int
    ) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=status, json=error_body("try later", "server_error"))
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        assert hook.retrieve_batch("batch_1").id == "batch_1"
        assert len(rsps.calls) == 2

    def test_persistent_500_gives_up_after_max_retries_plus_one(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=500,
            json=error_body("The server had an error", "server_error"),
            headers={"x-request-id": "req_500"},
        )
        with pytest.raises(ServerError) as info:
            hook.retrieve_batch("batch_1")
        assert len(rsps.calls) == hook.settings.max_retries + 1 == 4
        assert info.value.status_code == 500
        assert info.value.request_id == "req_500"
        assert "The server had an error" in str(info.value)
        assert info.value.retryable is True

    def test_max_retries_override_from_constructor(self, conn: None, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=503)
        with pytest.raises(ServerError):
            OpenAIBatchHook(max_retries=1).retrieve_batch("batch_1")
        assert len(rsps.calls) == 2

    @pytest.mark.parametrize(
        ("status", "exc_type", "error_type", "code", "param"),
        [
            (400, BadRequestError, "invalid_request_error", "invalid_value", "completion_window"),
            (401, AuthenticationError, "invalid_request_error", "invalid_api_key", None),
            (403, PermissionDeniedError, "permission_error", "unsupported_country_region_territory", None),
            (404, NotFoundError, "invalid_request_error", None, "batch_id"),
            (422, BadRequestError, "invalid_request_error", "bad", "metadata"),
        ],
    )
    def test_client_errors_fail_at_once_with_details(
        self,
        hook: OpenAIBatchHook,
        rsps: responses.RequestsMock,
        status: int,
        exc_type: type[OpenAIBatchAPIError],
        error_type: str,
        code: str | None,
        param: str | None,
    ) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=status,
            json=error_body(f"server says {status}", error_type, code, param),
            headers={"x-request-id": f"req_{status}"},
        )
        started = time.monotonic()
        with pytest.raises(exc_type) as info:
            hook.retrieve_batch("batch_1")
        assert time.monotonic() - started < 1.0
        assert len(rsps.calls) == 1
        exc = info.value
        assert type(exc) is exc_type
        assert (exc.status_code, exc.error_type, exc.code, exc.param) == (status, error_type, code, param)
        assert exc.request_id == f"req_{status}"
        assert (exc.method, exc.path) == ("GET", "/batches/batch_1")
        assert exc.retryable is False
        text = str(exc)
        for part in (
            f"server says {status}",
            f"HTTP {status}",
            error_type,
            f"request_id=req_{status}",
            "GET /batches/batch_1",
        ):
            assert part in text
        for part in (code, param):
            if part:
                assert part in text

    def test_non_json_error_body_falls_back_to_text(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=404, body="<html>404 Not Found</html>")
        with pytest.raises(NotFoundError, match="<html>404 Not Found</html>"):
            hook.retrieve_batch("batch_1")

    def test_azure_style_error_body_and_request_id(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=401,
            json={"error": {"code": "401", "message": "Access denied due to invalid subscription key."}},
            headers={"apim-request-id": "apim-1"},
        )
        with pytest.raises(AuthenticationError) as info:
            hook.retrieve_batch("batch_1")
        assert info.value.code == "401"
        assert info.value.error_type is None
        assert info.value.request_id == "apim-1"

    def test_insufficient_quota_is_not_retried(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=429,
            json=error_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        )
        with pytest.raises(QuotaExceededError) as info:
            hook.retrieve_batch("batch_1")
        assert len(rsps.calls) == 1  # waiting does not add credit
        assert isinstance(info.value, RateLimitError)
        assert info.value.retryable is False
        assert info.value.code == "insufficient_quota"
        assert "quota" in str(info.value)

    def test_rate_limit_exhausted_raises_retryable_rate_limit_error(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=429,
            json=error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
        )
        with pytest.raises(RateLimitError) as info:
            hook.retrieve_batch("batch_1")
        assert type(info.value) is RateLimitError
        assert info.value.retryable is True
        assert len(rsps.calls) == 4

    @pytest.mark.parametrize("headers", [{"Retry-After": "120"}, {"retry-after-ms": "61000"}])
    def test_retry_after_longer_than_max_gives_up_at_once(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, headers: dict[str, str]
    ) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=429, json=error_body("slow down"), headers=headers)
        started = time.monotonic()
        with pytest.raises(RateLimitError):
            hook.retrieve_batch("batch_1")
        assert time.monotonic() - started < 1.0
        assert len(rsps.calls) == 1

    def test_max_retry_after_extra_is_honoured(
        self, set_conn: Callable[..., None], rsps: responses.RequestsMock
    ) -> None:
        set_conn(max_retry_after=0.5)
        rsps.get(f"{BASE}/batches/batch_1", status=503, headers={"Retry-After": "1"})
        with pytest.raises(ServerError):
            OpenAIBatchHook().retrieve_batch("batch_1")
        assert len(rsps.calls) == 1

    def test_x_should_retry_false_stops_retries(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=503, headers={"x-should-retry": "false"})
        with pytest.raises(ServerError):
            hook.retrieve_batch("batch_1")
        assert len(rsps.calls) == 1

    def test_invalid_json_success_body_is_retried_then_raised(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(f"{BASE}/batches/batch_1", body='{"id": "batch_1", "sta')
        with pytest.raises(InvalidResponseError, match="expected a JSON object"):
            hook.retrieve_batch("batch_1")
        assert len(rsps.calls) == 4

    def test_truncated_body_then_success(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_1", body="<html>gateway</html>")
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        assert hook.retrieve_batch("batch_1").id == "batch_1"
        assert len(rsps.calls) == 2

    def test_connection_refused_retries_then_raises_in_bounded_time(
        self, set_conn: Callable[..., None], closed_port: int
    ) -> None:
        set_conn(host=f"http://127.0.0.1:{closed_port}/v1", max_retries=2, connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(APIConnectionError) as info:
            OpenAIBatchHook().retrieve_batch("batch_1")
        assert time.monotonic() - started < 5.0
        assert info.value.status_code is None
        assert info.value.reached_server is False
        assert "after 2 retries" in str(info.value)

    def test_cancel_conflict_returns_the_current_batch(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.post(
            f"{BASE}/batches/batch_1/cancel",
            status=409,
            json=error_body("Cannot cancel a batch with status 'completed'."),
        )
        rsps.get(
            f"{BASE}/batches/batch_1", json=batch_payload("batch_1", status="completed", output_file_id="file-out")
        )
        batch = hook.cancel_batch("batch_1")
        assert batch.status is BatchStatus.COMPLETED
        assert batch.output_file_id == "file-out"
        assert [(c.request.method, path_of(c)) for c in rsps.calls] == [
            ("POST", "/v1/batches/batch_1/cancel"),
            ("GET", "/v1/batches/batch_1"),
        ]

    def test_cancel_of_unknown_batch_raises_not_found(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.post(f"{BASE}/batches/batch_1/cancel", status=404, json=error_body("No batch found with id 'batch_1'."))
        with pytest.raises(NotFoundError):
            hook.cancel_batch("batch_1")
        assert len(rsps.calls) == 1

    def test_conflict_error_on_other_calls_is_raised(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=409, json=error_body("conflict"))
        with pytest.raises(ConflictError):
            hook.retrieve_batch("batch_1")


# ---------------------------------------------------------------------------------------------------------------
# Creates happen at most once
# ---------------------------------------------------------------------------------------------------------------


def tagged(batch_id: str, key: str, status: str = "in_progress") -> dict[str, Any]:
    return batch_payload(batch_id, status=status, metadata={IDEMPOTENCY_METADATA_KEY: key})


CREATE = {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions"}


class TestCreateOnce:
    def sequence(self, rsps: responses.RequestsMock) -> list[tuple[str, str]]:
        return [(c.request.method, path_of(c)) for c in rsps.calls]

    def test_existing_running_batch_with_key_is_reused_without_post(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(
            f"{BASE}/batches",
            json=page_payload([tagged("batch_other", "other-key"), tagged("batch_mine", "key-1", "finalizing")]),
        )
        batch = hook.create_batch(**CREATE, idempotency_key="key-1")
        assert batch.id == "batch_mine"
        assert calls_to(rsps, "POST", "/batches") == []
        assert query_of(rsps.calls[0]) == {"limit": ["100"]}

    def test_existing_completed_batch_with_key_is_reused(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        done = {**tagged("batch_done", "key-1", "completed"), "output_file_id": "file-out"}
        rsps.get(f"{BASE}/batches", json=page_payload([done]))
        rsps.get(f"{BASE}/files/file-out", json=file_payload("file-out", purpose="batch_output"))  # results exist
        assert hook.create_batch(**CREATE, idempotency_key="key-1").id == "batch_done"
        assert calls_to(rsps, "POST", "/batches") == []

    @pytest.mark.parametrize("status", ["failed", "expired", "cancelled", "cancelling"])
    def test_existing_unsuccessful_batch_with_key_is_not_reused(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, status: str
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([tagged("batch_old", "key-1", status)]))
        rsps.post(f"{BASE}/batches", json=tagged("batch_new", "key-1", "validating"))
        assert hook.create_batch(**CREATE, idempotency_key="key-1").id == "batch_new"
        assert len(calls_to(rsps, "POST", "/batches")) == 1

    def test_500_then_lookup_finds_the_batch_returns_it_without_second_post(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))  # the look before the first POST
        rsps.get(f"{BASE}/batches", json=page_payload([tagged("batch_created", "key-1", "validating")]))
        rsps.post(f"{BASE}/batches", status=500, json=error_body("The server had an error", "server_error"))
        batch = hook.create_batch(**CREATE, idempotency_key="key-1")
        assert batch.id == "batch_created"
        assert self.sequence(rsps) == [("GET", "/v1/batches"), ("POST", "/v1/batches"), ("GET", "/v1/batches")]

    def test_500_with_per_call_key_then_lookup_finds_the_batch(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        sent: list[str] = []

        def on_create(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            sent.append(json.loads(request.body)["metadata"][IDEMPOTENCY_METADATA_KEY])  # type: ignore[arg-type]
            return 500, {}, json.dumps(error_body("boom", "server_error"))

        def on_list(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            return 200, {}, json.dumps(page_payload([tagged("batch_created", sent[-1], "validating")]))

        rsps.add_callback("POST", f"{BASE}/batches", callback=on_create)
        rsps.add_callback("GET", f"{BASE}/batches", callback=on_list)
        assert hook.create_batch(**CREATE).id == "batch_created"
        assert self.sequence(rsps) == [("POST", "/v1/batches"), ("GET", "/v1/batches")]

    def test_500_then_lookup_finds_none_posts_again(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        rsps.post(f"{BASE}/batches", status=500, json=error_body("boom", "server_error"))
        rsps.post(f"{BASE}/batches", json=tagged("batch_second", "key-1", "validating"))
        batch = hook.create_batch(**CREATE, idempotency_key="key-1")
        assert batch.id == "batch_second"
        assert self.sequence(rsps) == [
            ("GET", "/v1/batches"),
            ("POST", "/v1/batches"),
            ("GET", "/v1/batches"),
            ("POST", "/v1/batches"),
        ]
        first, second = calls_to(rsps, "POST", "/batches")
        assert json_body(first) == json_body(second)  # the same key both times

    def test_persistent_500_posts_at_most_max_retries_plus_one_times(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        rsps.post(f"{BASE}/batches", status=500, json=error_body("boom", "server_error"))
        with pytest.raises(ServerError, match="may have been created; not sent again"):
            hook.create_batch(**CREATE, idempotency_key="key-1")
        posts = calls_to(rsps, "POST", "/batches")
        assert len(posts) == hook.settings.max_retries + 1
        # a lookup after every failed POST, plus the one before the first
        assert len(calls_to(rsps, "GET", "/batches")) == len(posts) + 1

    def test_500_without_any_key_is_not_sent_again(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        # 16 caller pairs leave no room for the per-call key, so the batch cannot be looked up.
        rsps.post(f"{BASE}/batches", status=500, json=error_body("boom", "server_error"))
        metadata = {f"k{i}": "v" for i in range(16)}
        with pytest.raises(ServerError) as info:
            hook.create_batch(**CREATE, metadata=metadata)
        assert "may have been created; not sent again, to avoid a duplicate" in str(info.value)
        assert "may have been created" in info.value.message
        assert self.sequence(rsps) == [("POST", "/v1/batches")]
        assert IDEMPOTENCY_METADATA_KEY not in json_body(rsps.calls[0])["metadata"]

    def test_503_with_retry_after_on_create_looks_up_before_posting_again(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        rsps.post(f"{BASE}/batches", status=503, headers={"Retry-After": "0"})
        rsps.post(f"{BASE}/batches", json=tagged("batch_new", "key-1", "validating"))
        assert hook.create_batch(**CREATE, idempotency_key="key-1").id == "batch_new"
        assert self.sequence(rsps) == [
            ("GET", "/v1/batches"),
            ("POST", "/v1/batches"),
            ("GET", "/v1/batches"),
            ("POST", "/v1/batches"),
        ]

    def test_lookups_after_a_failed_create_read_one_page_only(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        # A project with many batches: every page is full and says there is more.
        def full_page(request: Any) -> tuple[int, dict[str, str], str]:
            start = int((parse_qs(urlsplit(request.url).query).get("after") or ["b_0"])[0].split("_")[1])
            batches = [batch_payload(f"b_{start + i + 1}") for i in range(100)]
            return 200, {}, json.dumps(page_payload(batches, has_more=True))

        rsps.add_callback(responses.GET, f"{BASE}/batches", callback=full_page)
        rsps.post(f"{BASE}/batches", status=500, json=error_body("boom", "server_error"))
        rsps.post(f"{BASE}/batches", json=tagged("batch_new", "key-1", "validating"))
        assert hook.create_batch(**CREATE, idempotency_key="key-1").id == "batch_new"
        lists = calls_to(rsps, "GET", "/batches")
        # 10 pages before the first attempt (the key may be days old), 1 after the failure (it would be new).
        assert len(lists) == 11

    def test_429_on_create_is_retried_without_lookup(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.post(f"{BASE}/batches", status=429, json=error_body("Rate limit", "requests"))
        rsps.post(f"{BASE}/batches", json=batch_payload("batch_new", status="validating"))
        assert hook.create_batch(**CREATE).id == "batch_new"
        assert self.sequence(rsps) == [("POST", "/v1/batches"), ("POST", "/v1/batches")]

    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    def test_client_error_on_create_is_neither_retried_nor_looked_up(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, status: int
    ) -> None:
        rsps.post(f"{BASE}/batches", status=status, json=error_body("nope", code="invalid_value", param="endpoint"))
        with pytest.raises(OpenAIBatchAPIError) as info:
            hook.create_batch(**CREATE)
        assert info.value.status_code == status
        assert info.value.param == "endpoint"
        assert self.sequence(rsps) == [("POST", "/v1/batches")]

    def test_invalid_json_answer_to_create_is_resolved_by_lookup(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        rsps.get(f"{BASE}/batches", json=page_payload([tagged("batch_created", "key-1", "validating")]))
        rsps.post(f"{BASE}/batches", body="<html>bad gateway</html>")
        assert hook.create_batch(**CREATE, idempotency_key="key-1").id == "batch_created"
        assert len(calls_to(rsps, "POST", "/batches")) == 1

    def test_connection_refused_on_create_is_raised_without_lookup(
        self, set_conn: Callable[..., None], closed_port: int
    ) -> None:
        set_conn(host=f"http://127.0.0.1:{closed_port}/v1", max_retries=1)
        with pytest.raises(APIConnectionError) as info:
            OpenAIBatchHook().create_batch(**CREATE)
        assert info.value.reached_server is False
        assert "may have been created" not in str(info.value)

    def test_upload_500_then_lookup_finds_the_file(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        content = b'{"a": 1}\n'
        rsps.post(f"{BASE}/files", status=500, json=error_body("boom", "server_error"))
        rsps.get(
            f"{BASE}/files",
            json={
                "object": "list",
                "data": [
                    file_payload("file-old", filename="in.jsonl", bytes=len(content), created_at=1),
                    file_payload("file-other", filename="other.jsonl", bytes=len(content), created_at=int(time.time())),
                    file_payload("file-new", filename="in.jsonl", bytes=len(content), created_at=int(time.time())),
                ],
            },
        )
        uploaded = hook.upload_file(io.BytesIO(content), filename="in.jsonl")
        assert uploaded.id == "file-new"
        assert self.sequence(rsps) == [("POST", "/v1/files"), ("GET", "/v1/files")]
        assert query_of(rsps.calls[1]) == {"purpose": ["batch"], "limit": ["100"], "order": ["desc"]}

    def test_upload_500_then_lookup_finds_none_uploads_again_with_the_same_bytes(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        bodies: list[bytes] = []
        answers = iter(
            [(500, {}, json.dumps(error_body("boom", "server_error"))), (200, {}, json.dumps(file_payload()))]
        )

        def on_upload(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            bodies.append(request.body)  # type: ignore[arg-type]
            return next(answers)

        rsps.add_callback("POST", f"{BASE}/files", callback=on_upload)
        rsps.get(f"{BASE}/files", json={"object": "list", "data": []})
        hook.upload_file(io.BytesIO(b'{"a": 1}\n' * 1000), filename="in.jsonl")
        assert len(bodies) == 2
        assert bodies[0] == bodies[1]
        assert bodies[0].endswith(b"--\r\n")


# ---------------------------------------------------------------------------------------------------------------
# Pagination
# ---------------------------------------------------------------------------------------------------------------


class TestPagination:
    @pytest.mark.parametrize("limit", [0, 101, -1, True, 1.5, "20"])
    def test_list_batches_rejects_a_bad_limit_before_any_request(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, limit: Any
    ) -> None:
        with pytest.raises(ValueError, match="limit must be an integer between 1 and 100"):
            hook.list_batches(limit=limit)
        assert len(rsps.calls) == 0

    @pytest.fixture
    def pages(self, rsps: responses.RequestsMock) -> list[str | None]:
        """Seven batches served newest first in pages of the requested size; records each ``after``."""
        ids = [f"batch_{i}" for i in range(7)]
        afters: list[str | None] = []

        def on_list(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            query = parse_qs(urlsplit(request.url).query)
            after = query.get("after", [None])[0]
            limit = int(query["limit"][0])
            afters.append(after)
            start = ids.index(after) + 1 if after else 0
            chunk = ids[start : start + limit]
            page = page_payload([batch_payload(i) for i in chunk], has_more=start + limit < len(ids))
            return 200, {}, json.dumps(page)

        rsps.add_callback("GET", f"{BASE}/batches", callback=on_list)
        return afters

    def test_iter_batches_follows_has_more_across_pages(self, hook: OpenAIBatchHook, pages: list[str | None]) -> None:
        batches = list(hook.iter_batches(page_size=3))
        assert [b.id for b in batches] == [f"batch_{i}" for i in range(7)]
        assert pages == [None, "batch_2", "batch_5"]

    def test_iter_batches_stops_at_max_items(self, hook: OpenAIBatchHook, pages: list[str | None]) -> None:
        batches = list(hook.iter_batches(page_size=3, max_items=4))
        assert [b.id for b in batches] == ["batch_0", "batch_1", "batch_2", "batch_3"]
        assert pages == [None, "batch_2"]

    def test_iter_batches_starts_after(self, hook: OpenAIBatchHook, pages: list[str | None]) -> None:
        assert [b.id for b in hook.iter_batches(after="batch_4", page_size=100)] == ["batch_5", "batch_6"]
        assert pages == ["batch_4"]

    def test_page_without_has_more_keeps_paging_until_empty(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock
    ) -> None:
        for chunk in (["batch_a", "batch_b"], ["batch_c"], []):
            rsps.get(f"{BASE}/batches", json={"object": "list", "data": [batch_payload(i) for i in chunk]})
        assert [b.id for b in hook.iter_batches(page_size=2)] == ["batch_a", "batch_b", "batch_c"]
        assert [query_of(c).get("after") for c in rsps.calls] == [None, ["batch_b"], ["batch_c"]]

    def test_find_by_key_scans_a_bounded_number_of_batches(
        self, hook: OpenAIBatchHook, pages: list[str | None]
    ) -> None:
        assert hook.find_batch_by_idempotency_key("missing", max_scanned=5) is None
        assert len(pages) == 1  # one page of 100 holds all seven

    def test_find_by_key_returns_the_newest_match(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(
            f"{BASE}/batches",
            json=page_payload([tagged("batch_newest", "k", "validating"), tagged("batch_older", "k", "completed")]),
        )
        found = hook.find_batch_by_idempotency_key("k")
        assert found is not None and found.id == "batch_newest"


# ---------------------------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------------------------


class TestConnection:
    @pytest.mark.parametrize(
        ("host", "password", "extra", "match"),
        [
            ("http://127.0.0.1:9/v1", None, {}, "no API key"),
            ("http://127.0.0.1:9/v1", "   ", {}, "no API key"),
            ("api.openai.com/v1", API_KEY, {}, "needs a scheme"),
            ("ftp://api.openai.com/v1", API_KEY, {}, "needs a scheme"),
            ("https://x.openai.azure.com/openai?api-version=2024-10-21", API_KEY, {}, "must not carry a query"),
            ("https://x.openai.azure.com/openai#frag", API_KEY, {}, "must not carry a query or fragment"),
            ("https://user:pw@api.openai.com/v1", API_KEY, {}, "must not embed credentials"),
            ("http://127.0.0.1:9/v1", API_KEY, {"api_type": "anthropic"}, "unknown api_type 'anthropic'"),
            ("http://127.0.0.1:9/v1", API_KEY, {"timeout": "soon"}, "'timeout' must be a number"),
            ("http://127.0.0.1:9/v1", API_KEY, {"timeout": 0}, "'timeout' must be >= 1.0"),
            ("http://127.0.0.1:9/v1", API_KEY, {"max_retries": -1}, "'max_retries' must be >= 0"),
            ("http://127.0.0.1:9/v1", API_KEY, {"max_retries": 99}, "'max_retries' must be >= 0 and <= 20"),
            ("http://127.0.0.1:9/v1", API_KEY, {"connect_timeout": [1]}, "'connect_timeout' must be a number"),
            ("http://127.0.0.1:9/v1", API_KEY, {"backoff_factor": -0.5}, "'backoff_factor' must be >= 0"),
            ("http://127.0.0.1:9/v1", API_KEY, {"verify_ssl": "maybe"}, "'verify_ssl' must be true or false"),
        ],
    )
    def test_invalid_connection(
        self,
        monkeypatch: pytest.MonkeyPatch,
        rsps: responses.RequestsMock,
        host: str,
        password: str | None,
        extra: dict[str, Any],
        match: str,
    ) -> None:
        conn: dict[str, Any] = {"conn_type": "openai_batch", "host": host, "extra": extra}
        if password is not None:
            conn["password"] = password
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
        hook = OpenAIBatchHook()  # nothing is looked up yet
        with pytest.raises(InvalidConnectionError, match=re.escape(match)) as info:
            hook.retrieve_batch("batch_1")
        assert "openai_default" in str(info.value)
        assert API_KEY not in str(info.value)
        ok, message = OpenAIBatchHook().test_connection()
        assert ok is False
        assert match in message
        assert API_KEY not in message
        assert len(rsps.calls) == 0

    def test_no_host_defaults_to_openai(self, set_conn: Callable[..., None]) -> None:
        set_conn(host=None)
        assert OpenAIBatchHook().settings.base_url == "https://api.openai.com/v1"

    def test_trailing_slash_is_dropped(self, set_conn: Callable[..., None], rsps: responses.RequestsMock) -> None:
        set_conn(host=BASE + "/")
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        OpenAIBatchHook().retrieve_batch("batch_1")
        assert rsps.calls[0].request.url == f"{BASE}/batches/batch_1"

    @pytest.mark.parametrize(
        ("extra", "verify"),
        [({}, True), ({"verify_ssl": None}, True), ({"verify_ssl": ""}, True), ({"verify_ssl": True}, True),
         ({"verify_ssl": "true"}, True), ({"verify_ssl": False}, False), ({"verify_ssl": "false"}, False),
         ({"verify_ssl": "0"}, False), ({"verify_ssl": "off"}, False)],
    )  # fmt: skip
    def test_verify_ssl_defaults_on_and_is_only_turned_off_explicitly(
        self, set_conn: Callable[..., None], extra: dict[str, Any], verify: bool
    ) -> None:
        set_conn(**extra)
        hook = OpenAIBatchHook()
        assert hook.settings.verify_ssl is verify
        assert hook.get_conn().verify is verify

    def test_number_extras_as_strings_and_overrides(self, set_conn: Callable[..., None]) -> None:
        set_conn(timeout="30", connect_timeout="2.5", max_retries="7", backoff_factor="0.2", max_retry_after="10")
        settings = OpenAIBatchHook().settings
        assert (settings.read_timeout, settings.connect_timeout, settings.max_retries) == (30.0, 2.5, 7)
        assert (settings.backoff_factor, settings.max_retry_after) == (0.2, 10.0)
        settings = OpenAIBatchHook(timeout=5, max_retries=0).settings
        assert (settings.read_timeout, settings.max_retries) == (5, 0)

    def test_legacy_openai_provider_connection(
        self, monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock
    ) -> None:
        legacy = {
            "conn_type": "openai",
            "password": API_KEY,
            "extra": {"openai_client_kwargs": {"base_url": BASE, "organization": "org-legacy", "project": "proj_l"}},
        }
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(legacy))
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        hook = OpenAIBatchHook()
        assert hook.retrieve_batch("batch_1").id == "batch_1"
        headers = rsps.calls[0].request.headers
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert headers["OpenAI-Organization"] == "org-legacy"
        assert headers["OpenAI-Project"] == "proj_l"

    def test_legacy_connection_with_key_in_client_kwargs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        legacy = {"conn_type": "openai", "extra": {"openai_client_kwargs": {"api_key": API_KEY, "base_url": BASE}}}
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(legacy))
        settings = OpenAIBatchHook().settings
        assert settings.api_key == API_KEY
        assert settings.base_url == BASE

    def test_uri_with_protocol_in_host_keeps_port_and_path(
        self, monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock
    ) -> None:
        # Airflow's URI form for a host with a protocol: host "http://127.0.0.1", port 9, schema "v1".
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", f"openai-batch://http://:{API_KEY}@127.0.0.1:9/v1")
        rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1"))
        hook = OpenAIBatchHook()
        assert hook.settings.base_url == BASE
        assert hook.settings.api_key == API_KEY
        hook.retrieve_batch("batch_1")
        assert rsps.calls[0].request.url == f"{BASE}/batches/batch_1"

    @pytest.mark.parametrize(
        ("uri", "base_url"),
        [
            ("openai-batch://:sk-x@api.openai.com/https", "https://api.openai.com"),
            ("openai-batch://:sk-x@localhost:8080/http", "http://localhost:8080"),
            (
                "openai-batch://https://:sk-x@x.openai.azure.com/openai?api_type=azure",
                "https://x.openai.azure.com/openai",
            ),
        ],
    )
    def test_uri_style_connections(self, monkeypatch: pytest.MonkeyPatch, uri: str, base_url: str) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", uri)
        assert OpenAIBatchHook().settings.base_url == base_url

    def test_test_connection_success(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        ok, message = hook.test_connection()
        assert ok is True
        assert BASE in message
        assert API_KEY not in message
        assert query_of(rsps.calls[0]) == {"limit": ["1"]}

    def test_test_connection_failure_hides_the_key(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        rsps.get(
            f"{BASE}/batches",
            status=401,
            json=error_body(f"Incorrect API key provided: {API_KEY}.", code="invalid_api_key"),
        )
        ok, message = hook.test_connection()
        assert ok is False
        assert "HTTP 401" in message
        assert "invalid_api_key" in message
        assert API_KEY not in message

    def test_nothing_is_looked_up_in_init(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_OPENAI_DEFAULT", raising=False)
        OpenAIBatchHook()
        OpenAIBatchHook(conn_id="does_not_exist")

    def test_session_is_reused_and_close_drops_it(self, hook: OpenAIBatchHook) -> None:
        assert hook.get_conn() is hook.session is hook.get_conn()
        first = hook.session
        hook.close()
        assert hook.session is not first
        hook.close()
        hook.close()  # idempotent


# ---------------------------------------------------------------------------------------------------------------
# The API key never leaks
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("airflow_provider_openai_batch", "urllib3", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert API_KEY not in str(exc)
    assert API_KEY not in repr(exc)
    assert all(API_KEY not in str(arg) for arg in exc.args)
    for value in vars(exc).values():
        assert API_KEY not in str(value)
    assert API_KEY not in caplog.text
    for record in caplog.records:
        assert API_KEY not in record.getMessage()


class TestSecrets:
    @pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500])
    def test_error_bodies_echoing_the_key(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, debug_logs: pytest.LogCaptureFixture, status: int
    ) -> None:
        rsps.get(
            f"{BASE}/batches/batch_1",
            status=status,
            json={
                "error": {
                    "message": f"Incorrect API key provided: {API_KEY}. Bearer {API_KEY}",
                    "type": "invalid_request_error",
                    "param": API_KEY,
                    "code": f"key {API_KEY}",
                }
            },
        )
        with pytest.raises(OpenAIBatchAPIError) as info:
            hook.retrieve_batch("batch_1")
        assert info.value.status_code == status
        assert "Incorrect API key provided" in str(info.value)
        assert_no_secret(info.value, debug_logs)

    def test_plain_text_error_body_echoing_the_key(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        rsps.get(f"{BASE}/batches/batch_1", status=502, body=f"upstream rejected Authorization: Bearer {API_KEY}")
        with pytest.raises(ServerError) as info:
            hook.retrieve_batch("batch_1")
        assert "upstream rejected" in str(info.value)
        assert_no_secret(info.value, debug_logs)

    def test_invalid_json_body_echoing_the_key(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        rsps.get(f"{BASE}/batches/batch_1", body=f"<html>debug: api key {API_KEY}</html>")
        with pytest.raises(InvalidResponseError) as info:
            hook.retrieve_batch("batch_1")
        assert "<html>debug" in str(info.value)
        assert_no_secret(info.value, debug_logs)

    def test_connection_error(
        self, set_conn: Callable[..., None], closed_port: int, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        set_conn(host=f"http://127.0.0.1:{closed_port}/v1", max_retries=1)
        with pytest.raises(APIConnectionError) as info:
            OpenAIBatchHook().retrieve_batch("batch_1")
        assert_no_secret(info.value, debug_logs)

    def test_create_ambiguous_failure(
        self, hook: OpenAIBatchHook, rsps: responses.RequestsMock, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        rsps.get(f"{BASE}/batches", json=page_payload([]))
        rsps.post(f"{BASE}/batches", status=500, json=error_body(f"boom {API_KEY}", "server_error"))
        with pytest.raises(ServerError) as info:
            hook.create_batch(**CREATE, idempotency_key="key-1")
        assert_no_secret(info.value, debug_logs)

    def test_settings_and_hook_repr_hide_the_key(self, hook: OpenAIBatchHook) -> None:
        assert hook.settings.api_key == API_KEY
        assert API_KEY not in repr(hook.settings)
        assert API_KEY not in str(hook.settings)
        assert API_KEY not in repr(hook)

    def test_pickled_error_keeps_its_fields(self, hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
        import pickle

        rsps.get(
            f"{BASE}/batches/batch_1",
            status=404,
            json=error_body("gone", code="not_found"),
            headers={"x-request-id": "r1"},
        )
        with pytest.raises(NotFoundError) as info:
            hook.retrieve_batch("batch_1")
        clone = pickle.loads(pickle.dumps(info.value))
        assert type(clone) is NotFoundError
        assert (clone.status_code, clone.code, clone.request_id, str(clone)) == (
            404,
            "not_found",
            "r1",
            str(info.value),
        )


def test_models_returned_are_typed(hook: OpenAIBatchHook, rsps: responses.RequestsMock) -> None:
    rsps.get(f"{BASE}/batches/batch_1", json=batch_payload("batch_1", status="completed", output_file_id="file-o"))
    batch = hook.retrieve_batch("batch_1")
    assert isinstance(batch, Batch)
    assert batch.status.is_success
    assert batch.to_dict() == batch_payload("batch_1", status="completed", output_file_id="file-o")
