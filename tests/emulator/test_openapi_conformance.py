"""Every operation the provider uses, checked both ways against OpenAI's OpenAPI description
(:mod:`openapi_schemas`): the hook's requests (query, JSON and multipart bodies) and the emulator's answers.

The hook drives a real emulator on loopback; a ``requests`` response hook records each exchange as sent.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest
import requests

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests._kit.emulator_calls import chat_jsonl
from tests._kit.openapi_schemas import OPERATIONS, Operation, schema_of


class Exchange:
    def __init__(self, response: requests.Response) -> None:
        request = response.request
        split = urlsplit(request.url or "")
        self.method = str(request.method)
        self.path = split.path.removeprefix("/v1")
        self.query = dict(parse_qsl(split.query, keep_blank_values=True))
        self.content_type = request.headers.get("Content-Type", "")
        self.body = _body_bytes(request.body)
        self.status = response.status_code
        json_answer = response.headers.get("Content-Type", "").startswith("application/json")
        self.answer: Any = response.json() if json_answer else None

    def operation(self) -> Operation:
        found = [op for op in OPERATIONS if op.matches(self.method, self.path)]
        assert len(found) == 1, f"{self.method} {self.path} is not an operation of the specification"
        return found[0]


def _body_bytes(body: Any) -> bytes:
    if body is None or isinstance(body, bytes):
        return body or b""
    if isinstance(body, str):
        return body.encode()
    body.seek(0)  # the hook's streamed multipart body is seekable (it rewinds it for retries)
    data: bytes = body.read()
    return data


Recorded = tuple[OpenAIBatchHook, list[Exchange]]


def form_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """A multipart body as the object CreateFileRequest describes (``a[b]`` fields nest; form text that
    encodes an integer is one: form fields carry only text)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        value: Any = "<binary>" if part.get_filename() else part.get_content().strip()
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if "[" in name:
            outer, inner = name.rstrip("]").split("[", 1)
            fields.setdefault(outer, {})[inner] = value
        else:
            fields[name] = value
    return fields


def check_request(exchange: Exchange) -> None:
    operation = exchange.operation()
    for name, value in exchange.query.items():
        if name == "api-version":
            continue
        assert name in operation.query, f"{operation.operation_id}: unknown query parameter {name!r}"
        schema = operation.query[name]
        typed: Any = int(value) if schema.get("type") == "integer" else value
        jsonschema.validate(typed, schema)
    if operation.body is None:
        # The specification gives these operations no body; the service and the official SDK send none.
        assert exchange.body == b"", f"{operation.operation_id} takes no body, got {exchange.body!r}"
        return
    if exchange.content_type.startswith("multipart/form-data"):
        body = form_fields(exchange.content_type, exchange.body)
    else:
        assert exchange.content_type.startswith("application/json")
        body = json.loads(exchange.body)
    jsonschema.validate(body, schema_of(operation.body))


def check_response(exchange: Exchange) -> None:
    operation = exchange.operation()
    assert exchange.status == 200, (exchange.method, exchange.path, exchange.answer)
    if operation.response is not None:
        jsonschema.validate(exchange.answer, schema_of(operation.response))


@pytest.fixture
def recorded(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OpenAIBatchHook, list[Exchange]]]:
    extra = {"backoff_factor": 0.01, "backoff_max": 0.05}
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps({"conn_type": "openai_batch", "password": "sk-emulator", "host": emulator.base_url, "extra": extra}),
    )
    hook = OpenAIBatchHook()
    exchanges: list[Exchange] = []
    hook.session.hooks["response"].append(lambda response, **_: exchanges.append(Exchange(response)))
    yield hook, exchanges
    hook.close()


def test_every_operation_the_provider_uses_matches_the_specification(recorded: Recorded) -> None:
    hook, exchanges = recorded
    assert hook.list_files(purpose="batch") == []  # an empty page first
    uploaded = hook.upload_file(io.BytesIO(chat_jsonl(3)), filename="in.jsonl", expires_after_seconds=7200)
    hook.retrieve_file(uploaded.id)
    hook.list_files(purpose="batch", order="asc", limit=10)
    done = hook.create_batch(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        metadata={"team": "data"},
        output_expires_after=3600,
        idempotency_key="k-1",
    )
    hook.list_batches(limit=5)
    running = hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
    hook.cancel_batch(running.id)
    deadline = time.monotonic() + 30
    while (batch := hook.retrieve_batch(done.id)).status.value != "completed":
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.05)
    assert batch.output_file_id is not None
    sink = io.BytesIO()
    hook.download_file(batch.output_file_id, sink)
    hook.list_batches(after=done.id, limit=1)
    hook.delete_file(uploaded.id)

    for exchange in exchanges:
        check_request(exchange)
        check_response(exchange)
    seen = {exchange.operation().operation_id for exchange in exchanges}
    assert seen == {op.operation_id for op in OPERATIONS}


def test_the_checks_can_fail() -> None:
    # The relaxation is for absent response values only: a request body gets the full schema.
    bad_create = {"input_file_id": "f", "endpoint": "/chat/completions", "completion_window": "24h"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_create, schema_of("CreateBatchRequest"))
    as_text = {"anchor": "created_at", "seconds": "3600"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**bad_create, "endpoint": "/v1/embeddings", "output_expires_after": as_text},
                            schema_of("CreateBatchRequest"))  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"file": "x", "purpose": "batch", "expires_in": 5}, schema_of("CreateFileRequest"))
    with pytest.raises(jsonschema.ValidationError):
        empty_page = {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
        jsonschema.validate(empty_page, schema_of("ListFilesResponse"))
