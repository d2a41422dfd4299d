"""Synthetic batch input and batch output files of a given size (deterministic, written in chunks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL = "gpt-4o-mini"
_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "a",
    "batch",
    "of",
    "requests",
    "waits",
    "in",
    "line",
]


def _prompt(i: int, words: int) -> str:
    return " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(words))


def _write_lines(path: Path, size: int, record: Callable[[int], dict[str, Any]]) -> int:
    """Write ``record(i)`` as compact JSON lines until the file holds ``size`` bytes or slightly less."""
    lines = 0
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        chunk: list[str] = []
        while True:
            line = json.dumps(record(lines), separators=(",", ":")) + "\n"
            if written + len(line) > size:
                break
            chunk.append(line)
            written += len(line)
            lines += 1
            if len(chunk) >= 1000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return lines


def _request(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"request-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": _prompt(i, 900)},
            ],
            "max_tokens": 200,
        },
    }


def _result(i: int) -> dict[str, Any]:
    return {
        "id": f"batch_req_{i:08d}",
        "custom_id": f"request-{i}",
        "response": {
            "status_code": 200,
            "request_id": f"req_{i:08d}",
            "body": {
                "id": f"chatcmpl-{i}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _prompt(i, 300)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 620, "completion_tokens": 300, "total_tokens": 920},
            },
        },
        "error": None,
    }


def write_batch_input(path: Path, size: int) -> int:
    """Write chat-completion request lines until the file holds ``size`` bytes or slightly less; returns lines."""
    return _write_lines(path, size, _request)


def write_batch_output(path: Path, size: int) -> int:
    """Write batch output lines (chat completion results) up to ``size`` bytes; returns lines."""
    return _write_lines(path, size, _result)


def _job_request(words: int) -> Callable[[int], dict[str, Any]]:
    def record(i: int) -> dict[str, Any]:
        line = _request(i)
        line["custom_id"] = f"job-{i:07d}"
        line["body"]["messages"][1]["content"] = _prompt(i, words)
        return line

    return record


def write_job_input(path: Path, lines: int, words: int = 725) -> int:
    """Write ``lines`` chat-completion request lines (about 3.75 KB each at the default ``words``); returns bytes."""
    record = _job_request(words)
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for start in range(0, lines, 1000):
            chunk = "".join(
                json.dumps(record(i), separators=(",", ":")) + "\n" for i in range(start, min(start + 1000, lines))
            )
            out.write(chunk)
            written += len(chunk.encode("utf-8"))
    return written
