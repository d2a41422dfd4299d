"""The official ``openai`` SDK against the emulator: calls succeed and its models parse our JSON exactly."""

from __future__ import annotations

import io
import json
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types import Batch, FileDeleted, FileObject
from openai.types.batch import Errors
from openai.types.batch_error import BatchError
from openai.types.batch_request_counts import BatchRequestCounts
from openai.types.batch_usage import BatchUsage
from pydantic import BaseModel

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.emulator_calls import chat_jsonl, jsonl

PHASE = 10


def assert_exact(model: BaseModel, cls: type[BaseModel]) -> None:
    """Every field of the SDK model was sent, and nothing else."""
    assert isinstance(model, cls)
    assert not model.model_extra, model.model_extra
    assert model.model_fields_set == set(cls.model_fields), set(cls.model_fields) ^ model.model_fields_set


def assert_raw_keys(raw: dict[str, Any], cls: type[BaseModel]) -> None:
    assert set(raw) == set(cls.model_fields)


@pytest.fixture
def client(mc: EmulatorServer) -> OpenAI:
    return OpenAI(api_key="sk-emulator", base_url=mc.base_url, max_retries=0)


def test_sdk_full_flow(mc: EmulatorServer, client: OpenAI) -> None:
    raw = client.files.with_raw_response.create(file=("input.jsonl", io.BytesIO(chat_jsonl(6))), purpose="batch")
    assert raw.headers["x-request-id"].startswith("req_")
    assert_raw_keys(json.loads(raw.text), FileObject)
    f = raw.parse()
    assert_exact(f, FileObject)
    assert f.purpose == "batch" and f.filename == "input.jsonl"

    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"dag": "d1"},
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert_exact(b, Batch)
    assert_exact(b.request_counts, BatchRequestCounts)  # type: ignore[arg-type]
    assert b.status == "validating" and b.metadata == {"dag": "d1"}

    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    raw_b = client.batches.with_raw_response.retrieve(b.id)
    assert_raw_keys(json.loads(raw_b.text), Batch)
    done = raw_b.parse()
    assert_exact(done, Batch)
    assert done.status == "completed"
    assert done.usage is not None
    assert_exact(done.usage, BatchUsage)
    assert_exact(done.usage.input_tokens_details, type(done.usage.input_tokens_details))
    assert_exact(done.usage.output_tokens_details, type(done.usage.output_tokens_details))
    assert done.model == "gpt-4o-mini"
    assert done.output_file_id is not None

    content = client.files.content(done.output_file_id)
    lines = [json.loads(x) for x in content.content.decode().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"req-{i}" for i in range(6)]

    out = client.files.retrieve(done.output_file_id)
    assert_exact(out, FileObject)
    assert out.purpose == "batch_output"

    listed = client.files.list()
    ids = [x.id for x in listed]
    assert set(ids) == {f.id, done.output_file_id}
    for x in listed.data:
        assert_exact(x, FileObject)

    deleted = client.files.delete(done.output_file_id)
    assert_exact(deleted, FileDeleted)
    assert deleted.deleted is True


def test_sdk_failed_batch_errors_model(mc: EmulatorServer, client: OpenAI) -> None:
    f = client.files.create(file=("bad.jsonl", io.BytesIO(b"{oops\n")), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    failed = client.batches.retrieve(b.id)
    assert_exact(failed, Batch)
    assert failed.status == "failed" and failed.errors is not None
    assert_exact(failed.errors, Errors)
    assert failed.errors.data is not None
    [err] = failed.errors.data
    assert_exact(err, BatchError)
    assert (err.code, err.line) == ("invalid_json_line", 1)


def test_sdk_list_autopagination_and_cancel(mc: EmulatorServer, client: OpenAI) -> None:
    f = client.files.create(file=("in.jsonl", io.BytesIO(chat_jsonl(4))), purpose="batch")
    ids = []
    for _ in range(5):
        b = client.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"emulator": "hold"},
        )
        ids.append(b.id)
        mc.clock.advance(1)  # type: ignore[attr-defined]
    mc.reset_counters()
    got = [b.id for b in client.batches.list(limit=2)]
    assert got == ids[::-1]
    assert mc.counters["GET /v1/batches"] == 3
    page = client.batches.list(limit=2)
    for item in page.data:
        assert_exact(item, Batch)

    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    c = client.batches.cancel(ids[0])
    assert_exact(c, Batch)
    assert c.status == "cancelling"
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    assert client.batches.retrieve(ids[0]).status == "cancelled"
    with pytest.raises(openai.ConflictError) as info:
        client.batches.cancel(ids[0])
    assert info.value.status_code == 409


def test_sdk_error_mapping(mc: EmulatorServer, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="24h")
    assert bad.value.param == "input_file_id"  # type: ignore[attr-defined]
    wrong = OpenAI(api_key="sk-nope", base_url=mc.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.batches.list()


def test_sdk_retries_on_injected_429(mc: EmulatorServer) -> None:
    rule = mc.faults.add("GET /v1/batches", "status", status=429, retry_after_ms=10, times=2)
    client = OpenAI(api_key="sk-emulator", base_url=mc.base_url, max_retries=2)
    assert list(client.batches.list()) == []
    assert rule.fired == 2
    no_retry = OpenAI(api_key="sk-emulator", base_url=mc.base_url, max_retries=0)
    mc.faults.add("GET /v1/batches", "status", status=503)
    with pytest.raises(openai.InternalServerError):
        no_retry.batches.list()


def test_sdk_embeddings_batch(mc: EmulatorServer, client: OpenAI) -> None:
    lines = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "emb", "input": f"t{i}"}}
        for i in range(3)
    ]
    f = client.files.create(file=("e.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = client.batches.retrieve(b.id)
    assert b.status == "completed" and b.request_counts is not None and b.request_counts.completed == 3
    assert b.output_file_id is not None
    from openai.types import CreateEmbeddingResponse

    for line in client.files.content(b.output_file_id).text.splitlines():
        parsed = CreateEmbeddingResponse.model_validate(json.loads(line)["response"]["body"])
        assert len(parsed.data[0].embedding) == 8


def _sdk_models() -> list[tuple[str, dict[str, Any], type[BaseModel]]]:
    from openai.types import Completion, CreateEmbeddingResponse, ImagesResponse, ModerationCreateResponse, Video
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    return [
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, ChatCompletion),
        ("/v1/responses", {"model": "m", "input": "hi"}, Response),
        ("/v1/completions", {"model": "m", "prompt": "hi"}, Completion),
        ("/v1/embeddings", {"model": "m", "input": ["a", "b"]}, CreateEmbeddingResponse),
        ("/v1/moderations", {"model": "m", "input": "hi"}, ModerationCreateResponse),
        ("/v1/images/generations", {"model": "m", "prompt": "hi"}, ImagesResponse),
        ("/v1/images/edits", {"model": "m", "prompt": "hi"}, ImagesResponse),
        ("/v1/videos", {"model": "sora-2", "prompt": "hi"}, Video),
    ]


@pytest.mark.parametrize(("endpoint", "body", "cls"), _sdk_models(), ids=lambda v: v if isinstance(v, str) else "")
def test_result_bodies_parse_with_sdk_models(
    mc: EmulatorServer, client: OpenAI, endpoint: str, body: dict[str, Any], cls: type[BaseModel]
) -> None:
    line = {"custom_id": "x", "method": "POST", "url": endpoint, "body": body}
    f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = client.batches.retrieve(b.id)
    assert b.status == "completed" and b.output_file_id
    [out] = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
    parsed = cls.model_validate(out["response"]["body"])
    assert not parsed.model_extra
