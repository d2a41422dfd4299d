"""Tests of the batch input builder, validator and results reader."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch import batch_input
from airflow_provider_openai_batch.batch_input import (
    MAX_INPUT_BYTES,
    MAX_REQUESTS,
    BatchRequest,
    BatchResult,
    InputSummary,
    build_chat_requests,
    build_embedding_requests,
    build_responses_requests,
    iter_results,
    iter_results_file,
    normalize_endpoint,
    read_results,
    validate_batch_input,
    write_batch_input,
)
from airflow_provider_openai_batch.exceptions import BatchInputError, InputProblem

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"


def req(custom_id: Any = "req-1", **overrides: Any) -> dict[str, Any]:
    """An input line's object; ``overrides`` replace keys, a value of ``...`` removes one."""
    obj: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    }
    if custom_id is ...:
        del obj["custom_id"]
    for key, value in overrides.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def line(custom_id: Any = "req-1", **overrides: Any) -> bytes:
    return json.dumps(req(custom_id, **overrides)).encode()


def body(model: Any = MODEL, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], **extra}
    if model is not ...:
        out["model"] = model
    return out


def lines(*items: bytes, end: bytes = b"\n") -> bytes:
    return b"\n".join(items) + end


def good(n: int, start: int = 1) -> list[bytes]:
    return [line(f"req-{i}") for i in range(start, start + n)]


def problems(exc: BatchInputError) -> list[tuple[int | None, str]]:
    return [(p.line, p.code) for p in exc.problems]


def check(tmp_path: Path, content: bytes, **kwargs: Any) -> BatchInputError:
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------------------
# Every problem code, with its line
# --------------------------------------------------------------------------------------------------

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


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "input.jsonl"
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(missing)
    assert problems(info.value) == [(None, "file_not_found")]
    assert str(missing) in str(info.value)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(tmp_path)
    assert problems(info.value) == [(None, "unreadable_file")]


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


def test_file_too_large_for_max_bytes(tmp_path: Path) -> None:
    content = lines(*good(10))
    error = check(tmp_path, content, max_bytes=len(content) - 1)
    assert problems(error) == [(None, "file_too_large")]
    path = tmp_path / "input.jsonl"
    assert validate_batch_input(path, max_bytes=len(content)).bytes == len(content)


# --------------------------------------------------------------------------------------------------
# Valid files, endpoints and summaries
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/chat/completions", "/v1/chat/completions"),
        ("chat/completions", "/v1/chat/completions"),
        ("v1/embeddings", "/v1/embeddings"),
        (" /v1/responses ", "/v1/responses"),
    ],
)
def test_normalize_endpoint(url: str, expected: str) -> None:
    assert normalize_endpoint(url) == expected


@pytest.mark.parametrize("bad", ["", "  ", None, 3])
def test_normalize_endpoint_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        normalize_endpoint(bad)


@pytest.mark.parametrize("endpoint", [None, "/v1/chat/completions", "/chat/completions"])
@pytest.mark.parametrize("url", ["/v1/chat/completions", "/chat/completions"])
def test_both_endpoint_forms_are_valid(tmp_path: Path, endpoint: str | None, url: str) -> None:
    content = lines(line("a", url=url), line("b", url="/v1/chat/completions"), line("c", url="/chat/completions"))
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    summary = validate_batch_input(path, endpoint=endpoint)
    assert summary == InputSummary(
        path=str(path),
        requests=3,
        bytes=len(content),
        model=MODEL,
        endpoint="/v1/chat/completions",
        sha256=hashlib.sha256(content).hexdigest(),
    )


@pytest.mark.parametrize("end", [b"\n", b"", b"\r\n"], ids=["newline", "no_newline", "crlf"])
def test_one_trailing_newline_or_none(tmp_path: Path, end: bytes) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(lines(*good(2), end=end))
    assert validate_batch_input(path).requests == 2


def test_binary_stream_source() -> None:
    content = lines(*good(3))
    summary = validate_batch_input(io.BytesIO(content), endpoint="/chat/completions")
    assert (summary.path, summary.requests, summary.bytes) == (None, 3, len(content))
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(io.BytesIO(content), max_bytes=len(content) - 1)
    assert problems(info.value) == [(None, "file_too_large")]
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(io.BytesIO(lines(*good(1), b"{")))
    assert problems(info.value) == [(2, "invalid_json")]
    assert info.value.source == "<BytesIO>"


def test_open_file_source_uses_its_name(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(lines(*good(2)))
    with path.open("rb") as stream:
        assert validate_batch_input(stream).path == str(path)


def test_summary_round_trips() -> None:
    summary = InputSummary(path="/x.jsonl", requests=2, bytes=10, model="m", endpoint=CHAT, sha256="ab")
    assert InputSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_long_custom_id_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(lines(line("x" * 2000)))
    assert validate_batch_input(path).requests == 1


# --------------------------------------------------------------------------------------------------
# Limits at full size
# --------------------------------------------------------------------------------------------------


def test_50001_requests_rejected(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    template = '{"custom_id":"r%d","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":"x"}}\n'
    with path.open("w") as out:
        out.writelines(template % i for i in range(MAX_REQUESTS + 1))
    error = check_path(path)
    assert problems(error) == [(MAX_REQUESTS + 1, "too_many_requests")]
    assert "50,001 requests, over the limit of 50,000" in str(error)


def check_path(path: Path, **kwargs: Any) -> BatchInputError:
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(path, **kwargs)
    return info.value


def test_writer_rejects_50001_requests(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    texts = ((f"r{i}", "x") for i in range(MAX_REQUESTS + 1))
    with pytest.raises(BatchInputError) as info:
        write_batch_input(build_embedding_requests(texts, model="e"), path, endpoint="/v1/embeddings")
    assert problems(info.value) == [(MAX_REQUESTS + 1, "too_many_requests")]
    assert os.listdir(tmp_path) == []


def test_file_over_200_mb_rejected_from_size_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as out:
        out.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used, reads as NUL bytes

    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file must not be opened")

    monkeypatch.setattr(batch_input, "open", no_open, raising=False)
    started = time.perf_counter()
    error = check_path(path)
    assert time.perf_counter() - started < 1
    assert problems(error) == [(None, "file_too_large")]
    assert "209,715,201 bytes" in str(error) and "200 MB" in str(error)


def _write_big_file(path: Path, requests: int, content_size: int) -> int:
    filler = "lorem ipsum " * (content_size // 12)
    with path.open("w", encoding="utf-8") as out:
        for i in range(requests):
            out.write(
                json.dumps(
                    {
                        "custom_id": f"request-{i:06d}",
                        "method": "POST",
                        "url": CHAT,
                        "body": {"model": MODEL, "messages": [{"role": "user", "content": f"{i} {filler}"}]},
                    }
                )
                + "\n"
            )
    return path.stat().st_size


def test_validation_memory_is_constant(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    size = _write_big_file(path, requests=40_000, content_size=1_500)
    assert size > 60_000_000
    tracemalloc.start()
    try:
        summary = validate_batch_input(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.requests == 40_000 and summary.bytes == size
    assert peak < 30 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# --------------------------------------------------------------------------------------------------
# Builders and the writer
# --------------------------------------------------------------------------------------------------


def test_batch_request_to_line() -> None:
    request = BatchRequest("r1", {"model": "m", "input": "café"}, "/v1/embeddings")
    text = request.to_line()
    assert text == '{"custom_id":"r1","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"café"}}'
    assert BatchRequest.from_dict(json.loads(text)) == request
    assert BatchRequest.from_dict({"custom_id": "r", "body": {}}, endpoint=CHAT).url == CHAT


BUILDERS: list[Any] = [
    pytest.param(
        lambda: build_chat_requests({"a": "Hi", "b": "Hé"}, model=MODEL, system="Be brief", max_tokens=5),
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
            "max_tokens": 5,
        },
        id="chat",
    ),
    pytest.param(
        lambda: build_chat_requests([("a", "Hi"), ("b", "Hé")], model=MODEL, extra_body={"temperature": 0}),
        "/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0},
        id="chat_pairs_azure",
    ),
    pytest.param(
        lambda: build_embedding_requests({"a": "x", "b": "y"}, model="text-embedding-3-small"),
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": "x"},
        id="embeddings",
    ),
    pytest.param(
        lambda: build_responses_requests(
            {"a": "Hi", "b": "Yo"}, model="gpt-4.1", instructions="Be brief", max_output_tokens=9
        ),
        "/v1/responses",
        {"model": "gpt-4.1", "input": "Hi", "instructions": "Be brief", "max_output_tokens": 9},
        id="responses",
    ),
]


@pytest.mark.parametrize(("make", "endpoint", "first_body"), BUILDERS)
def test_builders_write_valid_files(tmp_path: Path, make: Any, endpoint: str, first_body: dict[str, Any]) -> None:
    path = tmp_path / "input.jsonl"
    written = write_batch_input(make(), path, endpoint=endpoint)
    validated = validate_batch_input(path, endpoint=endpoint)
    assert written == validated
    assert written.requests == 2 and written.model == first_body["model"]
    assert written.endpoint == normalize_endpoint(endpoint)
    content = path.read_bytes()
    assert content.endswith(b"}\n") and not content.endswith(b"\n\n")
    assert json.loads(content.splitlines()[0])["body"] == first_body
    assert (path.stat().st_mode & 0o777) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["input.jsonl"]


def test_writer_to_streams_matches_file(tmp_path: Path) -> None:
    prompts = {f"r{i}": f"prompt {i} é" for i in range(5)}
    path = tmp_path / "input.jsonl"
    on_disk = write_batch_input(build_chat_requests(prompts, model=MODEL), path, endpoint=CHAT)
    binary = io.BytesIO()
    in_bytes = write_batch_input(build_chat_requests(prompts, model=MODEL), binary, endpoint=CHAT)
    text = io.StringIO()
    in_text = write_batch_input(build_chat_requests(prompts, model=MODEL), text, endpoint=CHAT)
    assert binary.getvalue() == path.read_bytes() == text.getvalue().encode()
    assert on_disk.sha256 == in_bytes.sha256 == in_text.sha256
    assert in_bytes.path is None


def test_writer_accepts_mappings() -> None:
    out = io.BytesIO()
    summary = write_batch_input(
        [
            {"custom_id": "a", "body": body()},
            {"custom_id": "b", "body": body(), "url": "/chat/completions", "method": "POST"},
            BatchRequest("c", body(), CHAT),
        ],
        out,
        endpoint=CHAT,
    )
    assert summary.requests == 3
    first = json.loads(out.getvalue().splitlines()[0])
    assert first == {"custom_id": "a", "method": "POST", "url": CHAT, "body": body()}


WRITER_PROBLEMS: list[Any] = [
    pytest.param([{"custom_id": "a", "body": body(), "url": "/v1/embeddings"}], [(1, "url_mismatch")], id="url"),
    pytest.param([{"custom_id": "a", "body": body(), "method": "GET"}], [(1, "invalid_method")], id="method"),
    pytest.param(
        [{"body": body()}, {"custom_id": "", "body": body()}],
        [(1, "missing_custom_id"), (2, "missing_custom_id")],
        id="id",
    ),
    pytest.param([{"custom_id": "a", "body": body()}] * 2, [(2, "duplicate_custom_id")], id="duplicate"),
    pytest.param([{"custom_id": "a"}], [(1, "missing_body")], id="body"),
    pytest.param(
        [{"custom_id": "a", "body": body("m2")}, {"custom_id": "b", "body": body()}],
        [(2, "model_mismatch")],
        id="model",
    ),
    pytest.param([{"custom_id": "a", "body": body(stream=True)}], [(1, "streaming_not_supported")], id="stream"),
    pytest.param([{"custom_id": "a", "body": body(x={1, 2})}], [(1, "invalid_json")], id="not_serializable"),
    pytest.param([{"custom_id": "a", "body": body(t=float("inf"))}], [(1, "invalid_json")], id="infinity"),
    pytest.param([{"custom_id": "a", "body": body()}, "oops"], [(2, "not_an_object")], id="not_a_mapping"),
    pytest.param([], [(None, "empty_file")], id="empty"),
]


@pytest.mark.parametrize(("requests", "expected"), WRITER_PROBLEMS)
def test_writer_rejects_invalid_requests_and_writes_nothing(
    tmp_path: Path, requests: list[Any], expected: list[Any]
) -> None:
    path = tmp_path / "input.jsonl"
    with pytest.raises(BatchInputError) as info:
        write_batch_input(requests, path, endpoint="/chat/completions")
    assert problems(info.value) == expected
    assert os.listdir(tmp_path) == []
    stream = io.BytesIO()
    with pytest.raises(BatchInputError):
        write_batch_input(requests, stream, endpoint=CHAT)
    assert stream.getvalue() == b""


def test_invalid_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"previous")
    requests = [{"custom_id": "a", "body": body()}, {"custom_id": "a", "body": body()}]
    with pytest.raises(BatchInputError):
        write_batch_input(requests, path, endpoint=CHAT)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["input.jsonl"]


def test_failing_generator_leaves_no_file(tmp_path: Path) -> None:
    def requests() -> Iterator[BatchRequest]:
        yield from build_chat_requests({"a": "x"}, model=MODEL)
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database"):
        write_batch_input(requests(), tmp_path / "input.jsonl", endpoint=CHAT)
    assert os.listdir(tmp_path) == []


def test_writer_checks_size(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError) as info:
        write_batch_input(
            build_chat_requests({"a": "x" * 500}, model=MODEL), tmp_path / "i.jsonl", endpoint=CHAT, max_bytes=100
        )
    assert problems(info.value) == [(None, "file_too_large")]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra", [{"model": "other"}, {"messages": []}])
def test_extra_body_may_not_override(extra: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="extra_body must not set"):
        list(build_chat_requests({"a": "x"}, model=MODEL, extra_body=extra))


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------

CHAT_OK: dict[str, Any] = {
    "id": "batch_req_1",
    "custom_id": "req-1",
    "response": {
        "status_code": 200,
        "request_id": "req_abc",
        "body": {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
    },
    "error": None,
}
HTTP_400: dict[str, Any] = {
    "id": "batch_req_2",
    "custom_id": "req-2",
    "response": {
        "status_code": 400,
        "request_id": "req_x",
        "body": {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}},
    },
    "error": None,
}
EXPIRED: dict[str, Any] = {
    "id": "batch_req_3",
    "custom_id": "req-3",
    "response": None,
    "error": {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    },
}
RESPONSES_OK: dict[str, Any] = {
    "id": "batch_req_4",
    "custom_id": "req-4",
    "response": {
        "status_code": 200,
        "request_id": "req_r",
        "body": {
            "id": "resp_1",
            "object": "response",
            "output": [
                {"type": "reasoning", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "Hello, ", "annotations": []},
                        {"type": "refusal", "refusal": "no"},
                        {"type": "output_text", "text": "world", "annotations": []},
                    ],
                },
            ],
        },
    },
    "error": None,
}
EMBEDDING_OK: dict[str, Any] = {
    "id": "batch_req_5",
    "custom_id": "req-5",
    "response": {
        "status_code": 200,
        "request_id": "req_e",
        "body": {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}]},
    },
    "error": None,
}
EMBEDDING_B64: dict[str, Any] = {
    "id": "batch_req_6",
    "custom_id": "req-6",
    "response": {
        "status_code": 200,
        "request_id": "req_f",
        "body": {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": 0,
                    "embedding": base64.b64encode(struct.pack("<2f", 0.25, 2.0)).decode(),
                }
            ],
        },
    },
    "error": None,
}


def jsonl(*objects: dict[str, Any]) -> str:
    return "".join(json.dumps(obj) + "\n" for obj in objects)


@pytest.mark.parametrize(
    ("data", "ok", "status", "code", "message", "text", "embedding"),
    [
        pytest.param(CHAT_OK, True, 200, None, None, "hi", None, id="chat"),
        pytest.param(HTTP_400, False, 400, "invalid_request_error", "bad", None, None, id="http_400"),
        pytest.param(EXPIRED, False, None, "batch_expired", EXPIRED["error"]["message"], None, None, id="expired"),
        pytest.param(RESPONSES_OK, True, 200, None, None, "Hello, world", None, id="responses"),
        pytest.param(EMBEDDING_OK, True, 200, None, None, None, [0.5, -1.0], id="embedding"),
        pytest.param(EMBEDDING_B64, True, 200, None, None, None, [0.25, 2.0], id="embedding_base64"),
    ],
)
def test_batch_result(
    data: dict[str, Any],
    ok: bool,
    status: int | None,
    code: str | None,
    message: str | None,
    text: str | None,
    embedding: list[float] | None,
) -> None:
    result = BatchResult.from_dict(data)
    assert result.custom_id == data["custom_id"] and result.id == data["id"]
    assert (result.ok, result.status_code, result.error_code, result.error_message) == (ok, status, code, message)
    assert (result.text, result.embedding) == (text, embedding)
    assert BatchResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert result.to_dict() == data


def test_http_error_exposes_body_error() -> None:
    result = BatchResult.from_dict(HTTP_400)
    assert result.error == HTTP_400["response"]["body"]["error"]
    assert result.request_id == "req_x"


def test_chat_with_tool_calls_only_has_no_text() -> None:
    data = json.loads(json.dumps(CHAT_OK))
    data["response"]["body"]["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": []}
    assert BatchResult.from_dict(data).text is None


def test_iter_results_accepts_bytes_and_text_and_skips_blank_lines() -> None:
    text = jsonl(CHAT_OK) + "\n  \n" + jsonl(HTTP_400)
    from_text = list(iter_results(text.splitlines()))
    from_bytes = list(iter_results(io.BytesIO(text.encode())))
    assert [r.custom_id for r in from_text] == ["req-1", "req-2"]
    assert from_text == from_bytes


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"custom_id": "x",', "Expecting"),
        ("[1]", "not an object"),
        ('{"id": "batch_req_9"}', "custom_id"),
        (b"\xff{}", "utf-8"),
    ],
)
def test_malformed_result_line_is_named(bad: str | bytes, reason: str) -> None:
    good_lines: list[str | bytes] = [json.dumps(CHAT_OK), "", json.dumps(HTTP_400)]
    with pytest.raises(ValueError, match=rf"line 4: .*{reason}"):
        list(iter_results([*good_lines, bad]))


def test_read_results_merges_output_and_error_files(tmp_path: Path) -> None:
    output = tmp_path / "batch_1_output.jsonl"
    output.write_text(jsonl(CHAT_OK, RESPONSES_OK))
    errors = tmp_path / "batch_1_error.jsonl"
    errors.write_text(jsonl(HTTP_400, EXPIRED))
    results = read_results(output, str(errors), io.BytesIO(jsonl(EMBEDDING_OK).encode()), [jsonl(EMBEDDING_B64)])
    assert sorted(results) == ["req-1", "req-2", "req-3", "req-4", "req-5", "req-6"]
    assert {cid for cid, r in results.items() if not r.ok} == {"req-2", "req-3"}
    assert results["req-1"].text == "hi"
    assert results["req-3"].error_code == "batch_expired"
    assert read_results() == {}


def test_read_results_rejects_duplicates_naming_them(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text(jsonl(CHAT_OK))
    other = tmp_path / "other.jsonl"
    other.write_text(jsonl(HTTP_400, CHAT_OK))
    with pytest.raises(ValueError, match=r"custom_id 'req-1' appears twice \(in .*out.jsonl and .*other.jsonl\)"):
        read_results(output, other)


def test_read_results_names_file_of_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(jsonl(CHAT_OK) + "oops\n")
    with pytest.raises(ValueError, match=r"out\.jsonl line 2"):
        read_results(path)


def test_iter_results_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(jsonl(CHAT_OK, HTTP_400, EXPIRED))
    results = iter_results_file(path)
    assert next(results).custom_id == "req-1"
    assert [r.custom_id for r in results] == ["req-2", "req-3"]


# --------------------------------------------------------------------------------------------------
# Packaging
# --------------------------------------------------------------------------------------------------


def test_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys, airflow_provider_openai_batch.batch_input; "
        "bad = [m for m in ('airflow', 'requests', 'urllib3') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_input_problem_is_the_shared_type(tmp_path: Path) -> None:
    error = check(tmp_path, b"")
    assert all(isinstance(problem, InputProblem) for problem in error.problems)
    assert isinstance(error, ValueError)
