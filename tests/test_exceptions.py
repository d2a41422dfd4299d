"""The typed errors: hierarchy, messages, redaction and pickling."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchInputError,
    ConflictError,
    InputProblem,
    InvalidConnectionError,
    InvalidResponseError,
    NotFoundError,
    OpenAIBatchAPIError,
    OpenAIBatchError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    redact,
)

KEY = "sk-test-SECRET-1234"
API_ERRORS = [
    BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError, RateLimitError,
    QuotaExceededError, ServerError, APIConnectionError, APITimeoutError, InvalidResponseError,
]  # fmt: skip
RETRYABLE = {RateLimitError, ServerError, APIConnectionError, APITimeoutError, InvalidResponseError}


@pytest.mark.parametrize("cls", API_ERRORS)
def test_hierarchy_and_retryable(cls: type[OpenAIBatchAPIError]) -> None:
    assert issubclass(cls, OpenAIBatchAPIError)
    assert issubclass(cls, OpenAIBatchError)
    assert cls.retryable is (cls in RETRYABLE)


def test_specific_subclasses() -> None:
    assert issubclass(QuotaExceededError, RateLimitError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(InvalidConnectionError, ValueError)
    assert issubclass(BatchInputError, ValueError)
    assert APIConnectionError("x").reached_server is True


def test_message_with_every_detail() -> None:
    error = BadRequestError(
        "Invalid value for completion_window",
        status_code=400,
        error_type="invalid_request_error",
        code="invalid_value",
        param="completion_window",
        request_id="req_123",
        method="POST",
        path="/batches",
    )
    assert str(error) == (
        "POST /batches failed with HTTP 400: Invalid value for completion_window "
        "(type=invalid_request_error, code=invalid_value, param=completion_window, request_id=req_123)"
    )
    assert repr(error) == (
        "BadRequestError(status_code=400, code='invalid_value', message='Invalid value for completion_window')"
    )


def test_message_without_details() -> None:
    error = APIConnectionError("ConnectionError: refused")
    assert str(error) == "OpenAI API call failed with no response: ConnectionError: refused"


@pytest.mark.parametrize("cls", API_ERRORS)
def test_pickle_round_trip_keeps_type_and_fields(cls: type[OpenAIBatchAPIError]) -> None:
    error = cls("boom", status_code=503, code="c", param="p", request_id="r", method="GET", path="/files/f")
    error.reached_server = False  # type: ignore[attr-defined]
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert str(clone) == str(error)
    assert (clone.message, clone.status_code, clone.code, clone.param, clone.request_id) == (
        "boom", 503, "c", "p", "r",
    )  # fmt: skip
    assert clone.reached_server is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        (f"key {KEY} and {KEY}", (KEY,), "key *** and ***"),
        (f"key {KEY}", (None, "", KEY), "key ***"),
        ("abcd", ("abcd",), "***"),
        ("abc", ("abc",), "abc"),  # too short to be a key; redacting would mangle ordinary text
        ("nothing", (KEY,), "nothing"),
    ],
)
def test_redact(text: str, secrets: tuple[str | None, ...], expected: str) -> None:
    assert redact(text, secrets) == expected


def test_invalid_connection_error() -> None:
    error = InvalidConnectionError("my_conn", "no API key")
    assert str(error) == "Connection 'my_conn': no API key"
    assert error.conn_id == "my_conn"


def test_batch_input_error_lists_problems() -> None:
    problems = [InputProblem(line=i, code="invalid_json", message=f"bad {i}") for i in range(1, 26)]
    problems.append(InputProblem(line=None, code="too_large", message="over 200 MB"))
    error = BatchInputError("in.jsonl", problems, truncated=True)
    text = str(error)
    assert text.startswith("Invalid batch input in.jsonl: 26 problem(s)")
    assert "  - line 1: bad 1 [invalid_json]" in text
    assert "bad 21" not in text
    assert "... and 6 more" in text
    assert "stopped after the first problems" in text
    assert str(problems[-1]) == "file: over 200 MB [too_large]"
    assert error.problems == tuple(problems)
