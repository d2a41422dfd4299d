"""Tests of write_batch_input: checked, atomic, nothing half-written."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import (
    MAX_REQUESTS,
    BatchRequest,
    build_chat_requests,
    build_embedding_requests,
    write_batch_input,
)
from airflow_provider_openai_batch.exceptions import BatchInputError
from tests._kit.inputs import CHAT, MODEL, body, problems


def test_writer_rejects_50001_requests(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    texts = ((f"r{i}", "x") for i in range(MAX_REQUESTS + 1))
    with pytest.raises(BatchInputError) as info:
        write_batch_input(build_embedding_requests(texts, model="e"), path, endpoint="/v1/embeddings")
    assert problems(info.value) == [(MAX_REQUESTS + 1, "too_many_requests")]
    assert os.listdir(tmp_path) == []


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


def test_a_missing_folder_is_named_not_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "in.jsonl"
    with pytest.raises(FileNotFoundError) as caught:
        write_batch_input(build_chat_requests({"a": "hi"}, model=MODEL), target, endpoint=CHAT)
    message = str(caught.value)
    assert str(target) in message and "does not exist" in message
    assert ".tmp" not in message
    assert caught.value.filename == str(target.parent)
    assert not target.parent.exists()


def written_problems(requests: list[Any], **kwargs: Any) -> list[tuple[int | None, str, str]]:
    with pytest.raises(BatchInputError) as info:
        write_batch_input(requests, io.BytesIO(), endpoint=CHAT, **kwargs)
    return [(p.line, p.code, p.message) for p in info.value.problems]


def chat(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "body": body()}


def test_a_request_that_is_not_one_counts_as_a_line_and_a_request() -> None:
    refused = "request 2 is a int; pass a BatchRequest or a mapping with custom_id and body"
    assert written_problems([chat("a"), 5, chat("b")]) == [(2, "not_an_object", refused)]
    # Counted as a request: the file is not empty, and the next request is request 2.
    only = "request 1 is a str; pass a BatchRequest or a mapping with custom_id and body"
    assert written_problems(["x"]) == [(1, "not_an_object", only)]
    over = (
        "the file holds 3 requests, over the limit of 2 (line 3 is request 3); split the requests into several batches"
    )
    assert written_problems(["x", chat("a"), chat("b")], max_requests=2)[1] == (3, "too_many_requests", over)


def test_requests_past_the_limit_are_counted_not_written() -> None:
    over = (
        "the file holds 5 requests, over the limit of 2 (line 3 is request 3); split the requests into several batches"
    )
    assert written_problems([chat(f"r{i}") for i in range(5)], max_requests=2) == [(3, "too_many_requests", over)]
