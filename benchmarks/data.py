"""Synthetic batch input and batch output files of a given size (deterministic, written in chunks)."""

from __future__ import annotations

import json
from pathlib import Path

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


def write_batch_input(path: Path, size: int) -> int:
    """Write chat-completion request lines until the file holds ``size`` bytes or slightly less; returns lines."""
    lines = 0
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        chunk: list[str] = []
        while True:
            line = (
                json.dumps(
                    {
                        "custom_id": f"request-{lines}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": MODEL,
                            "messages": [
                                {"role": "system", "content": "You are a helpful assistant."},
                                {"role": "user", "content": _prompt(lines, 900)},
                            ],
                            "max_tokens": 200,
                        },
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
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


def write_batch_output(path: Path, size: int) -> int:
    """Write batch output lines (chat completion results) up to ``size`` bytes; returns lines."""
    lines = 0
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        chunk: list[str] = []
        while True:
            line = (
                json.dumps(
                    {
                        "id": f"batch_req_{lines:08d}",
                        "custom_id": f"request-{lines}",
                        "response": {
                            "status_code": 200,
                            "request_id": f"req_{lines:08d}",
                            "body": {
                                "id": f"chatcmpl-{lines}",
                                "object": "chat.completion",
                                "created": 1_700_000_000,
                                "model": MODEL,
                                "choices": [
                                    {
                                        "index": 0,
                                        "message": {"role": "assistant", "content": _prompt(lines, 300)},
                                        "finish_reason": "stop",
                                    }
                                ],
                                "usage": {"prompt_tokens": 620, "completion_tokens": 300, "total_tokens": 920},
                            },
                        },
                        "error": None,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
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
