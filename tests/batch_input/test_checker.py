"""Tests of the line rules: every problem code, with its line number and a message that says what to fix."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import validate_batch_input
from airflow_provider_openai_batch.batch_input.checker import LineChecker
from airflow_provider_openai_batch.endpoints import ENDPOINTS
from airflow_provider_openai_batch.exceptions import BatchInputError, InputProblem
from tests._kit.inputs import CHAT, MODEL, body, check, endpoint_line, good, line, lines, problems

PROBLEM_CASES: list[Any] = [
    pytest.param(b"", [(None, "empty_file")], id="empty_file"),
    pytest.param(b"\n", [(1, "empty_line"), (None, "empty_file")], id="only_newline"),
    pytest.param(
        lines(
            line("a"),
            b'{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", '
            b'"body": {"model": "gpt-4o-mini", "messages": "caf\xe9"}}',
        ),
        [(2, "not_utf8")],
        id="not_utf8",
    ),
    pytest.param(b"\xef\xbb\xbf" + lines(*good(2)), [(1, "utf8_bom")], id="utf8_bom"),
    pytest.param(lines(*good(2), b'{"custom_id": "req-3",'), [(3, "invalid_json")], id="invalid_json"),
    pytest.param(lines(*good(1), line("x", body=body(temperature=float("nan")))), [(2, "invalid_json")], id="nan"),
    pytest.param(lines(*good(1), b"[1, 2]", b'"text"'), [(2, "not_an_object"), (3, "not_an_object")], id="array"),
    pytest.param(
        lines(*good(1), line(...), line(""), line(5)),
        [(2, "missing_custom_id"), (3, "missing_custom_id"), (4, "missing_custom_id")],
        id="missing_custom_id",
    ),
    pytest.param(
        lines(line("req-1"), line("req-2"), line("req-1"), line("req-2")),
        [(3, "duplicate_custom_id"), (4, "duplicate_custom_id")],
        id="duplicate_custom_id",
    ),
    pytest.param(
        lines(*good(1), line("a", method="GET"), line("b", method=...), line("c", method="post")),
        [(2, "invalid_method"), (3, "invalid_method"), (4, "invalid_method")],
        id="invalid_method",
    ),
    pytest.param(
        lines(*good(1), line("a", url="/v1/embeddings"), line("b", url=...), line("c", url="chat/completions")),
        [(2, "url_mismatch"), (3, "url_mismatch"), (4, "url_mismatch")],
        id="url_mismatch",
    ),
    pytest.param(
        lines(*good(1), line("a", body=...), line("b", body="text"), line("c", body=None)),
        [(2, "missing_body"), (3, "missing_body"), (4, "missing_body")],
        id="missing_body",
    ),
    pytest.param(
        lines(*good(1), line("a", body=body(...)), line("b", body=body(4)), line("c", body=body(""))),
        [(2, "missing_model"), (3, "missing_model"), (4, "missing_model")],
        id="missing_model",
    ),
    pytest.param(
        lines(*good(2), line("a", body=body("gpt-4o")), line("b", body=body("gpt-4o")), line("c", body=body("o3"))),
        [(3, "model_mismatch"), (5, "model_mismatch")],
        id="model_mismatch_once_per_model",
    ),
    pytest.param(
        lines(*good(1), line("a", body=body(stream=True)), line("b", body=body(stream=False))),
        [(2, "streaming_not_supported")],
        id="streaming_not_supported",
    ),
    pytest.param(lines(line("a"), b"", line("b")), [(2, "empty_line")], id="empty_line_middle"),
    pytest.param(lines(line("a"), b"  \t", line("b")), [(2, "empty_line")], id="whitespace_line"),
    pytest.param(lines(*good(2), end=b"\n\n"), [(3, "empty_line")], id="two_trailing_newlines"),
    pytest.param(
        lines(*good(1), line(..., method="GET", url=..., body=body(stream=True))),
        [(2, "missing_custom_id"), (2, "invalid_method"), (2, "url_mismatch"), (2, "streaming_not_supported")],
        id="several_on_one_line",
    ),
]


@pytest.mark.parametrize(("content", "expected"), PROBLEM_CASES)
def test_problem_codes_with_line_numbers(tmp_path: Path, content: bytes, expected: list[Any]) -> None:
    error = check(tmp_path, content, endpoint=CHAT)
    assert problems(error) == expected
    assert error.source == str(tmp_path / "input.jsonl")
    assert not error.truncated
    for problem in error.problems:
        assert str(problem) in str(error)


def test_duplicate_message_tells_what_to_fix(tmp_path: Path) -> None:
    error = check(tmp_path, lines(line("req-1"), line("req-3"), *good(4, start=4), line("req-3")))
    assert "line 7: duplicate custom_id 'req-3' (first seen on line 2) [duplicate_custom_id]" in str(error)


def test_model_mismatch_names_both_models_and_lines(tmp_path: Path) -> None:
    error = check(tmp_path, lines(*good(3), line("x", body=body("gpt-4o"))))
    (problem,) = error.problems
    assert "'gpt-4o'" in problem.message and "line 4" in problem.message
    assert "'gpt-4o-mini'" in problem.message and "line 1" in problem.message


def test_not_utf8_names_byte_offset(tmp_path: Path) -> None:
    second = b'{"custom_id": "b\xff"}'
    error = check(tmp_path, lines(line("a"), second))
    (problem,) = error.problems
    in_line = second.index(b"\xff")
    assert problem.line == 2
    assert f"0xff at byte offset {in_line} of the line" in problem.message
    assert f"offset {len(line('a')) + 1 + in_line} in the file" in problem.message


def test_invalid_json_gives_position(tmp_path: Path) -> None:
    error = check(tmp_path, lines(line("a"), b'{"custom_id": "b" "x": 1}'))
    assert "column 19 (char 18)" in error.problems[0].message


def test_url_mismatch_names_endpoint(tmp_path: Path) -> None:
    error = check(tmp_path, lines(line("a", url="/v1/embeddings")), endpoint="/chat/completions")
    assert "'/v1/chat/completions'" in error.problems[0].message


def test_without_endpoint_lines_must_share_first_url(tmp_path: Path) -> None:
    content = lines(
        line("a", url=..., body=body()), line("b", url="/chat/completions"), line("c", url="/v1/embeddings")
    )
    error = check(tmp_path, content)
    assert problems(error) == [(1, "url_mismatch"), (3, "url_mismatch")]
    assert "line 2" in error.problems[1].message


def test_max_problems_truncates(tmp_path: Path) -> None:
    content = lines(*[b"not json"] * 10)
    error = check(tmp_path, content, max_problems=3)
    assert problems(error) == [(1, "invalid_json"), (2, "invalid_json"), (3, "invalid_json")]
    assert error.truncated
    assert "stopped after the first problems" in str(error)


def test_too_many_requests_reported_once_and_counted(tmp_path: Path) -> None:
    # Problems after the limit are not reported, but the requests are still counted.
    content = lines(*good(3), line("req-1"), b"junk", b"", line("z"))
    error = check(tmp_path, content, max_requests=3)
    assert problems(error) == [(4, "too_many_requests")]
    assert "holds 6 requests, over the limit of 3" in str(error)


def test_input_problem_is_the_shared_type(tmp_path: Path) -> None:
    error = check(tmp_path, b"")
    assert all(isinstance(problem, InputProblem) for problem in error.problems)
    assert isinstance(error, ValueError)


def embedding_line(custom_id: str, value: Any) -> bytes:
    return line(custom_id, url="/v1/embeddings", body={"model": "text-embedding-3-small", "input": value})


def test_embedding_inputs_over_the_limit_name_the_count(tmp_path: Path) -> None:
    content = lines(embedding_line("a", ["x"] * 3), embedding_line("b", "y"), embedding_line("c", ["z", "w"]))
    error = check(tmp_path, content, max_embedding_inputs=4)
    assert problems(error) == [(3, "too_many_embedding_inputs")]
    assert "6 embedding inputs" in str(error) and "limit of 4" in str(error)
    assert "4 embedding inputs per file" in str(error)  # the limits checked against, in the error


def test_embedding_inputs_are_counted_in_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(lines(embedding_line("a", ["x"] * 3), embedding_line("b", [1, 2, 3])))
    assert validate_batch_input(path).embedding_inputs == 4


def test_default_embedding_limit_is_50000(tmp_path: Path) -> None:
    content = lines(*(embedding_line(f"r{i}", ["t"] * 1000) for i in range(51)))
    error = check(tmp_path, content)
    assert problems(error) == [(51, "too_many_embedding_inputs")]
    assert "51,000 embedding inputs" in str(error)


def test_limits_are_reported_in_the_error(tmp_path: Path) -> None:
    error = check(tmp_path, lines(*good(3)), max_requests=2, max_bytes=10_000)
    assert "checked against the limits 2 requests, 10,000 bytes" in str(error)


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ({"max_tokens": 5}, ["max_tokens"]),
        ({"max_completion_tokens": 5}, []),
        ({"max_tokens": 5, "max_completion_tokens": 5}, ["max_tokens", "both"]),
    ],
)
def test_token_fields_warn_and_never_fail(tmp_path: Path, extra: dict[str, Any], warned: list[str]) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(lines(line("a", body=body("o3-mini", **extra)), line("b", body=body("o3-mini", **extra))))
    summary = validate_batch_input(path)
    assert summary.requests == 2
    assert len(summary.warnings) == len(warned)
    for text, word in zip(summary.warnings, warned, strict=True):
        assert text.startswith("line 1 (and 1 more lines): ") and word in text


def test_responses_token_fields_warn(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    request = line("a", url="/v1/responses", body={"model": "gpt-4.1", "input": "x", "max_tokens": 5})
    (warning,) = validate_batch_input(path_with(path, request)).warnings
    assert "max_output_tokens" in warning


def path_with(path: Path, *items: bytes) -> Path:
    path.write_bytes(lines(*items))
    return path


def messages(error: BatchInputError) -> list[tuple[int | None, str]]:
    return [(p.line, p.message) for p in error.problems]


def test_missing_and_invalid_fields_are_told_apart(tmp_path: Path) -> None:
    content = lines(
        json.dumps({"method": "POST", "body": body()}).encode(),
        json.dumps({"custom_id": 7, "url": CHAT, "body": body()}).encode(),
        json.dumps({"custom_id": "c", "method": "GET", "url": 5, "body": body()}).encode(),
        json.dumps({"custom_id": "d", "method": "POST", "url": CHAT}).encode(),
        json.dumps({"custom_id": "e", "method": "POST", "url": CHAT, "body": [1]}).encode(),
        json.dumps({"custom_id": "f", "method": "POST", "url": CHAT, "body": {"messages": []}}).encode(),
        json.dumps({"custom_id": "g", "method": "POST", "url": CHAT, "body": {"model": 4}}).encode(),
    )
    assert messages(check(tmp_path, content)) == [
        (1, "custom_id is missing; give every line a unique, non-empty string"),
        (1, "url is missing; it must be the batch endpoint path"),  # no endpoint known yet
        (2, "custom_id is invalid (7); give every line a unique, non-empty string"),
        (2, 'method is missing; the Batch API only runs "POST"'),
        (3, "method is 'GET'; the Batch API only runs \"POST\""),
        (3, "url is invalid (5); it must be the batch endpoint path such as '/v1/chat/completions'"),
        (4, "body is missing; it must be the endpoint's request object"),
        (5, "body is a JSON list; it must be the endpoint's request object"),
        (6, "body.model is missing; every request must name the model"),
        (7, "body.model is invalid (4); every request must name the model"),
    ]


def test_a_missing_url_names_the_endpoint_when_it_is_known(tmp_path: Path) -> None:
    error = check(tmp_path, lines(line("a", url=...)), endpoint=CHAT)
    assert messages(error) == [(1, "url is missing; it must be the batch endpoint path such as '/v1/chat/completions'")]


def test_an_endpoint_that_sorts_before_the_batch_endpoint_is_a_mismatch(tmp_path: Path) -> None:
    # "/v1/chat/completions" < "/v1/embeddings": a mismatch either way round.
    error = check(tmp_path, lines(line("a")), endpoint="/v1/embeddings")
    assert messages(error) == [(1, "url '/v1/chat/completions' does not match the batch endpoint '/v1/embeddings'")]


@pytest.mark.parametrize(("length", "shown"), [(78, "'" + "i" * 78 + "'"), (79, "'" + "i" * 76 + "...")])
def test_long_values_are_cut_to_80_characters_in_messages(tmp_path: Path, length: int, shown: str) -> None:
    custom_id = "i" * length  # its repr is length + 2 characters long
    error = check(tmp_path, lines(line(custom_id), line(custom_id)))
    assert messages(error) == [(2, f"duplicate custom_id {shown} (first seen on line 1)")]


def test_a_byte_order_mark_after_the_first_line_is_invalid_json(tmp_path: Path) -> None:
    error = check(tmp_path, lines(line("a"), b"\xef\xbb\xbf" + line("b")))
    assert problems(error) == [(2, "invalid_json")]


def test_100_problems_at_most_by_default(tmp_path: Path) -> None:
    error = check(tmp_path, lines(*[b"not json"] * 101))
    assert len(error.problems) == 100
    assert error.truncated
    assert not check(tmp_path, lines(*[b"not json"] * 100)).truncated


def test_a_stream_over_the_byte_limit_is_stopped_while_reading(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(io.BytesIO(lines(*good(5))), max_bytes=300)
    assert messages(info.value) == [
        (
            None,
            "the file is more than 300 bytes, over the limit of 300 bytes (300 bytes); "
            "split the requests into several batches",
        )
    ]


def test_the_request_limit_message_names_the_first_request_over_it(tmp_path: Path) -> None:
    error = check(tmp_path, lines(*good(5)), max_requests=3)
    assert messages(error) == [
        (
            4,
            "the file holds 5 requests, over the limit of 3 (line 4 is request 4); "
            "split the requests into several batches",
        )
    ]


@pytest.mark.parametrize(
    ("max_requests", "max_bytes", "endpoint", "described"),
    [
        (2, 1024 * 1024, CHAT, "2 requests, 1,048,576 bytes (1 MB) per file"),
        (2, 1024 * 1024 - 1, CHAT, "2 requests, 1,048,575 bytes (1048575 bytes) per file"),
        # Rounded to the nearest MB.
        (50_000, 105_329_459, CHAT, "50,000 requests, 105,329,459 bytes (100 MB) per file"),  # 100.45 MB
        (50_000, 105_434_316, CHAT, "50,000 requests, 105,434,316 bytes (101 MB) per file"),  # 100.55 MB
        (sys.maxsize, 200 * 1024 * 1024, CHAT, "209,715,200 bytes (200 MB) per file"),
        (sys.maxsize, sys.maxsize, CHAT, ""),  # unbounded: nothing to name
        (3, sys.maxsize, "/v1/embeddings", "3 requests, 7 embedding inputs per file"),
    ],
)
def test_the_limits_named_in_errors(max_requests: int, max_bytes: int, endpoint: str, described: str) -> None:
    checker = LineChecker(endpoint=endpoint, max_requests=max_requests, max_bytes=max_bytes, max_embedding_inputs=7)
    assert checker.describe_limits() == described


def test_each_warning_once_with_how_many_lines_it_applies_to(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    both = body(max_tokens=5, max_completion_tokens=5)
    path.write_bytes(lines(line("a"), line("b", body=both), line("c", body=body(max_tokens=5)), line("d", body=both)))
    assert validate_batch_input(path).warnings == (
        "line 2 (and 2 more lines): body.max_tokens: reasoning models (o-series, gpt-5) reject it and OpenAI "
        "deprecates it for max_completion_tokens; keep it only for a gateway or model that needs it",
        "line 2 (and 1 more lines): body sets both max_tokens and max_completion_tokens; keep one",
    )


def test_responses_warn_once_for_each_token_field_name(tmp_path: Path) -> None:
    def request(custom_id: str, **fields: Any) -> bytes:
        return line(custom_id, url="/v1/responses", body={"model": "gpt-4.1", "input": "x", **fields})

    path = path_with(tmp_path / "input.jsonl", request("a"), request("b", max_completion_tokens=5))
    assert validate_batch_input(path).warnings == (
        "line 2: body.max_completion_tokens is not a /v1/responses field: use max_output_tokens",
    )


def test_the_estimate_counts_the_bodies_of_every_line(tmp_path: Path) -> None:
    path = path_with(tmp_path / "input.jsonl", *good(3))
    estimate = validate_batch_input(path).estimate
    assert estimate is not None
    assert (estimate.requests, estimate.model) == (3, MODEL)
    assert estimate.input_tokens > 0


#: endpoint -> (warning codes, what the warnings say, embedding inputs) of two lines that set every token field
#: and 3 inputs each.
EVERY_ENDPOINT_READS: dict[str, tuple[list[str], list[str], int]] = {
    "/v1/chat/completions": (
        ["max_tokens", "both_token_limits"],
        ["body.max_tokens: reasoning models", "body sets both max_tokens"],
        0,
    ),
    "/v1/completions": ([], [], 0),
    # One code for both fields: reported once, from the first field seen.
    "/v1/responses": (["token_limit_field"], ["body.max_tokens is not a /v1/responses field"], 0),
    "/v1/embeddings": ([], [], 6),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_is_checked_as_its_registry_entry_says(tmp_path: Path, endpoint: str) -> None:
    fields = {"max_tokens": 5, "max_completion_tokens": 5, "input": ["a", "b", "c"]}
    path = path_with(tmp_path / "input.jsonl", *(endpoint_line(i, endpoint, **fields) for i in ("a", "b")))
    codes, warned, inputs = EVERY_ENDPOINT_READS[endpoint]

    summary = validate_batch_input(path, endpoint=endpoint)
    checker = LineChecker(endpoint=endpoint, max_requests=2, max_bytes=10_000)
    for raw in path.read_bytes().splitlines(keepends=True):
        checker.feed(raw)
    assert list(checker.notes) == codes

    assert len(summary.warnings) == len(warned)
    for text, start in zip(summary.warnings, warned, strict=True):
        assert text.split(": ", 1)[1].startswith(start), text
    assert summary.embedding_inputs == inputs
    # Only an endpoint that counts inputs per batch is held to the input limit.
    if inputs:
        assert problems(check(tmp_path, path.read_bytes(), endpoint=endpoint, max_embedding_inputs=5)) == [
            (2, "too_many_embedding_inputs")
        ]
    else:
        assert validate_batch_input(path, endpoint=endpoint, max_embedding_inputs=1).requests == 2
