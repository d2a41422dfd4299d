"""Tests of the request builders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import (
    build_chat_requests,
    build_embedding_requests,
    build_responses_requests,
    normalize_endpoint,
    validate_batch_input,
    write_batch_input,
)
from tests._kit.inputs import MODEL

BUILDERS: list[Any] = [
    pytest.param(
        lambda: build_chat_requests({"a": "Hi", "b": "Hé"}, model=MODEL, system="Be brief", max_tokens=5),
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
            "max_completion_tokens": 5,
        },
        id="chat",
    ),
    pytest.param(
        lambda: build_chat_requests({"a": "Hi", "b": "Hé"}, model=MODEL, max_tokens=5, token_field="max_tokens"),
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
        id="chat_old_token_field_for_gateways",
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


@pytest.mark.parametrize("extra", [{"model": "other"}, {"messages": []}])
def test_extra_body_may_not_override(extra: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="extra_body must not set"):
        list(build_chat_requests({"a": "x"}, model=MODEL, extra_body=extra))


def test_chat_token_cap_is_sent_as_max_completion_tokens() -> None:
    # Reasoning models reject max_tokens: the cap goes in the field every current model accepts.
    (request,) = build_chat_requests({"a": "x"}, model="o3-mini", max_tokens=100)
    assert request.body["max_completion_tokens"] == 100 and "max_tokens" not in request.body


def test_unknown_token_field_is_refused() -> None:
    with pytest.raises(ValueError, match="token_field"):
        list(build_chat_requests({"a": "x"}, model=MODEL, max_tokens=1, token_field="max_output_tokens"))
