"""Tests of the results reader."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import (
    BatchResult,
    iter_results,
    iter_results_file,
    read_results,
)

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


class ReadOnly:
    """A file object that only reads, like Airflow 3.1.0's object-storage file wrapper (it does not iterate)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)

    def __iter__(self) -> Any:
        raise TypeError("not iterable")


def test_results_are_read_from_a_stream_that_only_reads() -> None:
    results = read_results(ReadOnly(jsonl(CHAT_OK, EXPIRED).encode()))  # type: ignore[arg-type]
    assert sorted(results) == ["req-1", "req-3"]
