"""Tests of BatchRequest and InputSummary."""

from __future__ import annotations

import json

from airflow_provider_openai_batch.batch_input import (
    BatchRequest,
    InputSummary,
)
from tests._kit.inputs import CHAT


def test_summary_round_trips() -> None:
    summary = InputSummary(path="/x.jsonl", requests=2, bytes=10, model="m", endpoint=CHAT, sha256="ab")
    assert InputSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_batch_request_to_line() -> None:
    request = BatchRequest("r1", {"model": "m", "input": "café"}, "/v1/embeddings")
    text = request.to_line()
    assert text == '{"custom_id":"r1","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"café"}}'
    assert BatchRequest.from_dict(json.loads(text)) == request
    assert BatchRequest.from_dict({"custom_id": "r", "body": {}}, endpoint=CHAT).url == CHAT
