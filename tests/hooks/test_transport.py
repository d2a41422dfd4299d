"""The transport-neutral pieces: connection settings, retry policy, error mapping, JSON decoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    APITimeoutError,
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
from airflow_provider_openai_batch.hooks._errors import api_error, decode_json, is_ambiguous, transport_error
from airflow_provider_openai_batch.hooks._request import ApiRequest
from airflow_provider_openai_batch.hooks._settings import DEFAULT_BASE_URL, ConnectionSettings
from airflow_provider_openai_batch.hooks._transport import FailedAttempt, RetryPolicy, RetryState

KEY = "sk-test-SECRET-1234"
GET = ApiRequest("GET", "/batches/batch_1")
POST = ApiRequest("POST", "/batches", json={}, idempotent=False)


def settings(**extra: Any) -> ConnectionSettings:
    return ConnectionSettings.from_connection_fields("c", host="https://api.example.com/v1", password=KEY, extra=extra)


class TestConnectionSettings:
    def test_defaults(self) -> None:
        s = ConnectionSettings.from_connection_fields("c", host=None, password=KEY, extra=None)
        assert s.base_url == DEFAULT_BASE_URL
        assert (s.api_type, s.verify_ssl, s.max_retries, s.read_timeout, s.connect_timeout) == (
            "openai", True, 5, 60.0, 10.0,
        )  # fmt: skip

    def test_extra_as_json_string(self) -> None:
        s = ConnectionSettings.from_connection_fields(
            "c", host=None, password=KEY, extra=json.dumps({"api_type": " Azure ", "api_version": "2024-10-21"})
        )
        assert s.api_type == "azure"
        assert s.query({"limit": 5, "after": None}) == {"limit": "5", "api-version": "2024-10-21"}

    @pytest.mark.parametrize(("extra", "match"), [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
    def test_bad_extra(self, extra: str, match: str) -> None:
        with pytest.raises(InvalidConnectionError, match=match):
            ConnectionSettings.from_connection_fields("c", host=None, password=KEY, extra=extra)

    def test_key_from_extra_and_whitespace_stripped(self) -> None:
        s = ConnectionSettings.from_connection_fields("c", host=None, password=None, extra={"api_key": f"  {KEY}\n"})
        assert s.api_key == KEY

    def test_repr_hides_the_key(self) -> None:
        s = settings(organization="org-1")
        assert KEY not in repr(s)
        assert KEY not in str(s)
        assert "org-1" in repr(s)

    def test_headers(self) -> None:
        assert settings().headers()["Authorization"] == f"Bearer {KEY}"
        azure = settings(api_type="azure", organization="org-1", project="proj_1").headers()
        assert azure["api-key"] == KEY
        assert "Authorization" not in azure
        assert (azure["OpenAI-Organization"], azure["OpenAI-Project"]) == ("org-1", "proj_1")

    def test_overrides_ignore_none(self) -> None:
        s = settings(timeout=30).with_overrides(read_timeout=None, max_retries=2)
        assert (s.read_timeout, s.max_retries) == (30.0, 2)

    @pytest.mark.parametrize(
        ("host", "schema", "port", "expected"),
        [
            ("https://api.openai.com/v1/", None, None, "https://api.openai.com/v1"),
            ("http://localhost:8080/v1", None, None, "http://localhost:8080/v1"),
            ("api.openai.com", "https", None, "https://api.openai.com"),
            ("localhost", "http", 8080, "http://localhost:8080"),
            ("https://x.openai.azure.com", "openai/v1", 443, "https://x.openai.azure.com:443/openai/v1"),
            ("https://x.openai.azure.com/openai", "ignored", None, "https://x.openai.azure.com/openai"),
            ("https://x.openai.azure.com:8443/openai", None, 443, "https://x.openai.azure.com:8443/openai"),
        ],
    )
    def test_base_url_forms(self, host: str, schema: str | None, port: int | None, expected: str) -> None:
        s = ConnectionSettings.from_connection_fields("c", host=host, password=KEY, extra={}, schema=schema, port=port)
        assert s.base_url == expected
        assert s.url("/batches") == expected + "/batches"

    @pytest.mark.parametrize(
        "host",
        [
            "https://sk-pasted-key@api.openai.com/v1",  # a user name alone: an API key pasted into the URL
            "https://:sk-pasted-key@api.openai.com/v1",  # a password alone
            "https://user:pw@api.openai.com/v1",
        ],
    )
    def test_base_url_with_credentials_is_refused(self, host: str) -> None:
        with pytest.raises(InvalidConnectionError, match="must not embed credentials") as info:
            ConnectionSettings.from_connection_fields("c", host=host, password=KEY, extra={})
        assert "sk-pasted-key" not in str(info.value)

    @pytest.mark.parametrize("host", ["https://api.openai.com/v1?api-version=1", "https://api.openai.com/v1#x"])
    def test_base_url_with_query_or_fragment_is_refused(self, host: str) -> None:
        with pytest.raises(InvalidConnectionError, match="must not carry a query or fragment"):
            ConnectionSettings.from_connection_fields("c", host=host, password=KEY, extra={})


class TestRetryState:
    def test_status_retries_are_bounded(self) -> None:
        state = RetryState(GET, settings(max_retries=2, backoff_factor=0))
        assert state.delay_after_status(503, {}) == 0
        assert state.delay_after_status(503, {}) == 0
        assert state.delay_after_status(503, {}) is None
        assert state.attempts == 2

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
    def test_client_errors_are_not_retried(self, status: int) -> None:
        assert RetryState(GET, settings()).delay_after_status(status, {}) is None

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "250"}, 0.25),
         ({"retry-after-ms": "x", "retry-after": "3"}, 3.0), ({"retry-after": "soon"}, 0.0)],
    )  # fmt: skip
    def test_hints(self, headers: dict[str, str], expected: float) -> None:
        assert RetryState(GET, settings(backoff_factor=0)).delay_after_status(429, headers) == pytest.approx(expected)

    def test_http_date_hint(self) -> None:
        from email.utils import formatdate

        delay = RetryState(GET, settings(backoff_factor=0)).delay_after_status(
            429, {"retry-after": formatdate(None, usegmt=True)}
        )
        assert delay is not None and delay <= 1.0

    def test_hint_over_the_cap_gives_up(self) -> None:
        assert RetryState(GET, settings(max_retry_after=5)).delay_after_status(429, {"retry-after": "6"}) is None

    def test_backoff_grows_and_is_capped(self) -> None:
        state = RetryState(GET, settings(max_retries=10, backoff_factor=1, backoff_max=3))
        delays = [state.delay_after_status(500, {}) for _ in range(6)]
        assert delays[0] == 0  # urllib3 repeats the first failure at once
        assert all(d is not None and d <= 3 + 1 for d in delays)  # cap plus at most one factor of jitter
        assert max(d for d in delays if d is not None) >= 2

    def test_quota_429_is_not_retried(self) -> None:
        body = json.dumps({"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}})
        assert RetryState(GET, settings()).delay_after_status(429, {}, body.encode()) is None
        rate = json.dumps({"error": {"message": "rate", "type": "requests", "code": "rate_limit_exceeded"}})
        assert RetryState(GET, settings()).delay_after_status(429, {}, rate.encode()) is not None

    @pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
    def test_creates_are_not_repeated_on_ambiguous_statuses(self, status: int) -> None:
        state = RetryState(POST, settings())
        assert state.delay_after_status(status, {"retry-after": "1"}) is None

    def test_creates_are_repeated_on_429(self) -> None:
        assert RetryState(POST, settings(backoff_factor=0)).delay_after_status(429, {}) == 0

    def test_transport_failures(self) -> None:
        get = RetryState(GET, settings(max_retries=1, backoff_factor=0))
        assert get.delay_after_failure("read") == 0
        assert get.delay_after_failure("timeout") is None
        post = RetryState(POST, settings(max_retries=3, backoff_factor=0))
        assert post.delay_after_failure("read") is None  # may have reached the server
        post = RetryState(POST, settings(max_retries=3, backoff_factor=0))
        assert post.delay_after_failure("timeout") is None
        post = RetryState(POST, settings(max_retries=3, backoff_factor=0))
        assert post.delay_after_failure("connect") == 0  # never reached it


class TestApiError:
    @pytest.mark.parametrize(
        ("status", "cls"),
        [(400, BadRequestError), (401, AuthenticationError), (403, PermissionDeniedError), (404, NotFoundError),
         (409, ConflictError), (422, BadRequestError), (418, BadRequestError), (429, RateLimitError),
         (408, ServerError), (500, ServerError), (599, ServerError), (302, OpenAIBatchAPIError)],
    )  # fmt: skip
    def test_status_mapping(self, status: int, cls: type[OpenAIBatchAPIError]) -> None:
        body = json.dumps({"error": {"message": "m", "type": "t", "param": "p", "code": "c"}}).encode()
        error = api_error(GET, status, {"x-request-id": "r"}, body, secrets=(KEY,))
        assert type(error) is cls
        assert (error.message, error.error_type, error.param, error.code, error.request_id) == ("m", "t", "p", "c", "r")

    def test_quota(self) -> None:
        body = json.dumps({"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}})
        error = api_error(GET, 429, {}, body.encode(), secrets=())
        assert isinstance(error, QuotaExceededError)
        assert "retrying will not help" in str(error)

    @pytest.mark.parametrize(
        ("body", "message"),
        [(b"", "empty response body"), (b"plain text", "plain text"), (b'{"error": "flat string"}', "flat string"),
         (b'{"detail": "x"}', '{"detail": "x"}'), (b"\xff\xfe", "\ufffd\ufffd")],
    )  # fmt: skip
    def test_odd_bodies(self, body: bytes, message: str) -> None:
        assert api_error(GET, 400, {}, body, secrets=()).message == message

    def test_everything_from_the_server_is_redacted(self) -> None:
        body = json.dumps({"error": {"message": f"bad {KEY}", "type": KEY, "param": KEY, "code": KEY}}).encode()
        error = api_error(GET, 401, {}, body, secrets=(KEY,))
        assert KEY not in str(error) + repr(error)
        assert error.message == "bad ***"

    def test_decode_json(self) -> None:
        assert decode_json(GET, 200, {}, b'{"id": "x"}') == {"id": "x"}
        for body in (b"[1]", b"null", b"<html>", b'{"id": '):
            with pytest.raises(InvalidResponseError):
                decode_json(GET, 200, {}, body)
        with pytest.raises(InvalidResponseError) as info:
            decode_json(GET, 200, {"x-request-id": "r"}, f"key={KEY}".encode(), secrets=(KEY,))
        assert KEY not in str(info.value)
        assert info.value.request_id == "r"

    def test_transport_error_and_ambiguity(self) -> None:
        refused = transport_error(POST, "connect", ConnectionRefusedError("refused"), 3)
        assert type(refused) is APIConnectionError
        assert refused.reached_server is False
        assert "after 3 retries" in str(refused)
        assert is_ambiguous(refused) is False
        timeout = transport_error(POST, "timeout", TimeoutError("read timed out"), 1)
        assert type(timeout) is APITimeoutError
        assert "after 1 retry" in str(timeout)
        assert is_ambiguous(timeout) is True
        assert is_ambiguous(ServerError("x")) is True
        assert is_ambiguous(InvalidResponseError("x")) is True
        assert is_ambiguous(BadRequestError("x")) is False
        assert is_ambiguous(RateLimitError("x")) is False
        assert "after" not in str(transport_error(GET, "read", OSError("x"), 0))


class TestRetryPolicyRules:
    """The policy's tables and boundaries, status by status (pinned by make mutate)."""

    @pytest.mark.parametrize("status", range(400, 600))
    def test_which_statuses_are_repeated(self, status: int) -> None:
        policy = RetryPolicy()
        assert policy.should_retry(GET, FailedAttempt(status=status), 0) is (status in {408, 429, 500, 502, 503, 504})
        hinted = FailedAttempt(status=status, headers={"retry-after": "1"})
        assert policy.should_retry(GET, hinted, 0) is (status in {408, 413, 429, 500, 502, 503, 504})
        assert policy.should_retry(POST, hinted, 0) is (status == 429)  # a create repeats only a refusal

    def test_the_budget_is_a_ceiling(self) -> None:
        policy = RetryPolicy(max_retries=2)
        assert [policy.should_retry(GET, FailedAttempt(status=503), n) for n in range(5)] == [
            True, True, False, False, False,
        ]  # fmt: skip

    def test_a_hint_of_exactly_the_cap_is_obeyed(self) -> None:
        policy = RetryPolicy(max_retry_after=5)
        assert policy.should_retry(GET, FailedAttempt(status=503, headers={"retry-after": "5"}), 0)
        assert not policy.should_retry(GET, FailedAttempt(status=503, headers={"retry-after": "5.5"}), 0)

    @pytest.mark.parametrize(("value", "repeated"), [("false", False), ("FALSE", False), ("true", True), ("", True)])
    def test_x_should_retry(self, value: str, repeated: bool) -> None:
        attempt = FailedAttempt(status=503, headers={"x-should-retry": value})
        assert RetryPolicy().should_retry(GET, attempt, 0) is repeated

    @pytest.mark.parametrize(
        ("headers", "hint"),
        [({"retry-after": "-5"}, 0.0), ({"retry-after": "0"}, 0.0), ({"retry-after-ms": "-100"}, 0.0),
         ({"retry-after": ""}, None), ({}, None), ({"retry-after": " 2 "}, 2.0)],
    )  # fmt: skip
    def test_hints_are_never_negative(self, headers: dict[str, str], hint: float | None) -> None:
        assert FailedAttempt(status=429, headers=headers).hint() == hint

    def test_http_date_hints_count_from_now(self) -> None:
        import time
        from email.utils import formatdate

        past = FailedAttempt(status=429, headers={"retry-after": formatdate(time.time() - 600, usegmt=True)})
        assert past.hint() == 0.0
        ahead = FailedAttempt(status=429, headers={"retry-after": formatdate(time.time() + 120, usegmt=True)})
        assert 100 < (ahead.hint() or 0) <= 121

    def test_attempts_and_policies_are_immutable(self) -> None:
        with pytest.raises(AttributeError):
            FailedAttempt(status=503).status = 500  # type: ignore[misc]
        with pytest.raises(AttributeError):
            RetryPolicy().max_retries = 1  # type: ignore[misc]


def test_policy_defaults_are_the_connection_defaults() -> None:
    plain = ConnectionSettings.from_connection_fields("c", host=None, password=KEY, extra={})
    assert RetryPolicy() == RetryPolicy.from_settings(plain)
    assert (plain.max_retries, plain.backoff_factor, plain.backoff_max, plain.max_retry_after) == (5, 0.5, 30.0, 60.0)


def test_backoff_doubles_from_the_second_retry_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(backoff_factor=1.0, backoff_max=100.0)
    attempt = FailedAttempt(status=503)
    assert policy.retry_delay(attempt, 0) == 0.0  # the first retry goes at once
    for _ in range(200):
        assert 2.0 <= policy.retry_delay(attempt, 1) <= 3.0
        assert 8.0 <= policy.retry_delay(attempt, 3) <= 9.0
        assert 100.0 <= policy.retry_delay(attempt, 10) <= 101.0


@pytest.mark.parametrize(("status", "repeated"), [(429, False), (408, True), (500, True), (503, True)])
def test_only_a_429_with_insufficient_quota_is_final(status: int, repeated: bool) -> None:
    attempt = FailedAttempt(status=status, body=b'{"error": {"code": "insufficient_quota", "message": "m"}}')
    assert RetryPolicy().should_retry(GET, attempt, 0) is repeated
