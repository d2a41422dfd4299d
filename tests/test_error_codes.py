"""The one table of error codes: what each result line means for running it again."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch.error_codes import (
    CAPACITY_ERROR_CODES,
    RETRYABLE_CODES,
    UNRUN_CODES,
    LineKind,
    classify_error,
    classify_line,
    resubmitted_within_try,
)


def raw(line: object) -> bytes:
    return json.dumps(line).encode() + b"\n"


def error_line(code: str) -> bytes:
    return raw({"id": "batch_req_r", "custom_id": "r", "response": None, "error": {"code": code}})


def http(status: int, error: object = None) -> bytes:
    body = {"error": error} if error is not None else {}
    return raw({"custom_id": "r", "response": {"status_code": status, "body": body}, "error": None})


@pytest.mark.parametrize(
    ("line", "code", "kind", "within_try"),
    [
        # The service failed it for a passing reason: a round of the same try runs it again.
        *(
            (error_line(code), code, LineKind.RETRYABLE, True)
            for code in ("rate_limit_exceeded", "server_error", "internal_error", "timeout", "service_unavailable")
        ),
        (http(429, {"type": "requests", "code": None}), "requests", LineKind.RETRYABLE, True),
        (
            http(429, {"type": "insufficient_quota", "code": "insufficient_quota"}),
            "insufficient_quota",
            LineKind.RETRYABLE,
            True,
        ),
        (http(408), "http_408", LineKind.RETRYABLE, True),
        (http(500), "http_500", LineKind.RETRYABLE, True),
        (http(503, {"type": "server_error", "code": "overloaded"}), "overloaded", LineKind.RETRYABLE, True),
        # It never ran: the service left it (a round runs it), or someone cancelled it or the deadline stopped it
        # (only a new try runs it).
        (error_line("batch_expired"), "batch_expired", LineKind.UNRUN, True),
        (error_line("missing_result"), "missing_result", LineKind.UNRUN, True),
        (error_line("batch_cancelled"), "batch_cancelled", LineKind.UNRUN, False),
        (error_line("deadline_exceeded"), "deadline_exceeded", LineKind.UNRUN, False),
        # The request itself is wrong, or nothing is known: never run again.
        (http(400, {"type": "invalid_request_error", "code": None}), "invalid_request_error", LineKind.FINAL, False),
        (
            http(400, {"type": "invalid_request_error", "code": "content_policy_violation"}),
            "content_policy_violation",
            LineKind.FINAL,
            False,
        ),
        (http(499), "http_499", LineKind.FINAL, False),
        (http(407), "http_407", LineKind.FINAL, False),
        (http(409), "http_409", LineKind.FINAL, False),
        (http(428), "http_428", LineKind.FINAL, False),
        (http(430), "http_430", LineKind.FINAL, False),
        (raw({"custom_id": "r", "response": {"status_code": "500"}, "error": None}), "unknown", LineKind.FINAL, False),
        (raw({"custom_id": "r", "response": None, "error": "boom"}), "unknown", LineKind.FINAL, False),
        (raw({"custom_id": "r", "response": None, "error": None}), "unknown", LineKind.FINAL, False),
        (raw([1, 2]), "unknown", LineKind.FINAL, False),
        (b"not json\n", "unknown", LineKind.FINAL, False),
    ],
)
def test_what_each_error_line_means(line: bytes, code: str, kind: LineKind, within_try: bool) -> None:
    assert classify_error(line) == (code, kind)
    assert classify_line(line, output=False) is kind
    assert resubmitted_within_try(code, kind) is within_try


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (
            raw({"id": "x", "custom_id": "r", "response": {"status_code": 200, "body": {}}, "error": None}),
            LineKind.ANSWERED,
        ),
        (raw({"id": "x", "custom_id": "r", "response": {"status_code": 299, "body": {}}}), LineKind.ANSWERED),
        # An output line is an answer only with a 2xx status: a 5xx or a 400 there is judged as an error line.
        (raw({"id": "x", "custom_id": "r", "response": {"status_code": 500, "body": {}}}), LineKind.RETRYABLE),
        (raw({"id": "x", "custom_id": "r", "response": {"status_code": 300, "body": {}}}), LineKind.FINAL),
        (
            raw(
                {
                    "custom_id": "r",
                    "response": {"status_code": 400, "body": {"error": {"type": "invalid_request_error"}}},
                }
            ),
            LineKind.FINAL,
        ),
        # The status comes from the response, not from an answer's text that mentions one.
        (
            raw({"custom_id": "r", "response": {"body": {"text": '"status_code": 200'}, "status_code": 503}}),
            LineKind.RETRYABLE,
        ),
        (raw({"custom_id": "r", "response": {"status_code": 199, "body": {}}}), LineKind.FINAL),
        (raw({"custom_id": "r", "response": {"body": {}}}), LineKind.FINAL),
        (b"{not json\n", LineKind.FINAL),
        (raw([1, 2]), LineKind.FINAL),
        (raw({"custom_id": "r", "response": [200]}), LineKind.FINAL),
        # A response whose body comes before its status is read whole: the status is its own, not the body's.
        (raw({"custom_id": "r", "response": {"body": {"choices": []}, "status_code": 200}}), LineKind.ANSWERED),
        (raw({"custom_id": "r", "response": {"body": {"status_code": 200}, "status_code": 503}}), LineKind.RETRYABLE),
        (raw({"custom_id": "r", "response": {"body": {"status_code": 503}, "status_code": 200}}), LineKind.ANSWERED),
        # A status before the body is read without parsing the line (a long body is never decoded for it).
        (
            b'{"custom_id": "r", "response": {"status_code": 200, "body": {"choices": [{"text": "\xff\n',
            LineKind.ANSWERED,
        ),
        (b'{"custom_id": "r", "response": {"status_code": 200, "request_id": \n', LineKind.ANSWERED),
        # ... and one that is not an answer is judged as an error line, parsed whole: broken, it is final.
        (b'{"custom_id": "r", "response": {"status_code": 500, "body": {"choices": [\n', LineKind.FINAL),
    ],
    ids=lambda v: v.decode(errors="replace")[:60] if isinstance(v, bytes) else str(v),
)
def test_an_output_line_is_answered_only_with_a_2xx_status(line: bytes, kind: LineKind) -> None:
    assert classify_line(line, output=True) is kind


def test_the_tables_name_the_services_codes() -> None:
    assert {"token_limit_exceeded", "request_limit_exceeded"} == CAPACITY_ERROR_CODES
    assert {
        "rate_limit_exceeded",
        "server_error",
        "internal_error",
        "timeout",
        "service_unavailable",
    } == RETRYABLE_CODES


def test_the_tables_do_not_overlap() -> None:
    assert not (RETRYABLE_CODES & UNRUN_CODES) and not (CAPACITY_ERROR_CODES & (RETRYABLE_CODES | UNRUN_CODES))
    assert {"batch_expired", "batch_cancelled", "missing_result", "deadline_exceeded"} == UNRUN_CODES
    assert LineKind.ANSWERED > LineKind.FINAL > LineKind.RETRYABLE > LineKind.UNRUN
