"""Tests of validate_batch_input: sources, summaries and the limits at full size, in constant memory."""

from __future__ import annotations

import hashlib
import io
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import (
    MAX_INPUT_BYTES,
    MAX_REQUESTS,
    InputSummary,
    validate_batch_input,
)
from airflow_provider_openai_batch.batch_input import validate as validate_module
from airflow_provider_openai_batch.exceptions import BatchInputError
from tests._kit.inputs import CHAT, MODEL, check, check_path, good, line, lines, problems


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


def test_file_too_large_for_max_bytes(tmp_path: Path) -> None:
    content = lines(*good(10))
    error = check(tmp_path, content, max_bytes=len(content) - 1)
    assert problems(error) == [(None, "file_too_large")]
    path = tmp_path / "input.jsonl"
    assert validate_batch_input(path, max_bytes=len(content)).bytes == len(content)


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


def test_long_custom_id_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(lines(line("x" * 2000)))
    assert validate_batch_input(path).requests == 1


def test_50001_requests_rejected(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    template = '{"custom_id":"r%d","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":"x"}}\n'
    with path.open("w") as out:
        out.writelines(template % i for i in range(MAX_REQUESTS + 1))
    error = check_path(path)
    assert problems(error) == [(MAX_REQUESTS + 1, "too_many_requests")]
    assert "50,001 requests, over the limit of 50,000" in str(error)


def test_file_over_200_mb_rejected_from_size_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as out:
        out.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used, reads as NUL bytes

    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file must not be opened")

    monkeypatch.setattr(validate_module, "open", no_open, raising=False)
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


def test_path_that_cannot_be_looked_at_is_unreadable(tmp_path: Path) -> None:
    # Tests run as root, where a chmod 000 file stays readable: a path through a regular file fails for
    # everyone (ENOTDIR), which takes the same branch as a permission error on stat.
    blocker = tmp_path / "input.jsonl"
    blocker.write_bytes(lines(*good(1)))
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(blocker / "inner.jsonl")
    assert [(p.line, p.code, p.message) for p in info.value.problems] == [
        (None, "unreadable_file", f"cannot read {blocker / 'inner.jsonl'}: Not a directory")
    ]


def test_file_that_cannot_be_opened_is_unreadable(tmp_path: Path) -> None:
    # A UNIX socket exists and is not a directory, yet open() fails for root too (ENXIO): the open branch.
    import socket

    path = tmp_path / "input.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        with pytest.raises(BatchInputError) as info:
            validate_batch_input(path)
    finally:
        server.close()
    assert [(p.line, p.code, p.message) for p in info.value.problems] == [
        (None, "unreadable_file", f"cannot read {path}: No such device or address")
    ]


def test_text_stream_is_checked_as_the_utf8_it_will_be_uploaded_as() -> None:
    content = lines(*good(2), line("req-x").replace(b"req-x", "req-café".encode()))
    text = content.decode("utf-8")
    summary = validate_batch_input(io.StringIO(text), endpoint="/v1/chat/completions")
    assert (summary.requests, summary.bytes) == (3, len(content))
    assert len(content) > len(text)  # counted in bytes, not characters
    assert summary.sha256 == hashlib.sha256(content).hexdigest()
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(io.StringIO(text + "{\n"))
    assert problems(info.value) == [(4, "invalid_json")]
    assert info.value.source == "<StringIO>"
