"""Bad input at every public entry point: a clear error naming the problem, before anything is uploaded or billed.

Each case runs against the emulator and asserts the error type, that the message names the problem (and
the line, for files), and that the server saw no request at all. The two cases only the service can judge
(an endpoint or a completion window one provider accepts and another refuses) must report the rejection
and delete the file uploaded for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import airflow
import pytest

from airflow_provider_openai_batch.batch_input import MAX_INPUT_BYTES, validate_batch_input
from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import BadRequestError, BatchInputError, InvalidConnectionError
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch import (
    OpenAIBatchCancelOperator,
    OpenAIBatchCreateOperator,
    OpenAIBatchDownloadOperator,
)
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor
from tests._kit.airflow_compat import AirflowFailException
from tests._kit.batches import ENDPOINT, chat_line, jsonl, write
from tests._kit.connection import set_connection
from tests._kit.reliability import REGISTRY
from tests._kit.ti import FakeTI


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=0.05) as server:
        yield server


@pytest.fixture
def conn(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    set_connection(monkeypatch, emu.base_url)
    return emu


def lines(*objs: Any) -> bytes:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs).encode()


def with_body(i: int, **changes: Any) -> dict[str, Any]:
    line = chat_line(i)
    line["body"].update(changes)
    return line


def without(i: int, key: str) -> dict[str, Any]:
    line = chat_line(i)
    del line[key]
    return line


def create(tmp: Path, content: bytes | None = None, *, name: str = "input.jsonl", **kwargs: Any) -> None:
    """Run the create operator on ``content`` written to a file (or on the operator arguments given)."""
    if content is not None:
        kwargs["input_file"] = str(write(tmp / name, content))
    kwargs.setdefault("endpoint", ENDPOINT)
    if "input_file" not in kwargs and "input_file_id" not in kwargs:
        kwargs["input_file"] = str(write(tmp / name, jsonl(2)))
    OpenAIBatchCreateOperator(task_id="create", **kwargs).execute({"ti": FakeTI()})  # type: ignore[arg-type]


def sensor(**kwargs: Any) -> None:
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("poke_interval", 0.01)
    kwargs.setdefault("timeout", 5)
    OpenAIBatchSensor(task_id="wait", **kwargs).execute({"ti": FakeTI(task_id="wait")})  # type: ignore[arg-type]


def with_conn(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps({"conn_type": "openai_batch", **conn}))


def sparse(tmp: Path, size: int) -> bytes | None:
    path = tmp / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(jsonl(1))
        handle.truncate(size)
    return None


@dataclass(frozen=True)
class Case:
    name: str
    entry: str
    run: Callable[[Path, pytest.MonkeyPatch, EmulatorServer], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    says: tuple[str, ...]
    #: Airflow before this version fails on the connection itself, before the provider sees it.
    min_airflow: tuple[int, int] = (3, 0)


def _huge(tmp: Path, mp: pytest.MonkeyPatch, emu: EmulatorServer) -> None:
    sparse(tmp, MAX_INPUT_BYTES + 1)
    create(tmp, input_file=str(tmp / "huge.jsonl"))


def _huge_path(tmp: Path, mp: pytest.MonkeyPatch, emu: EmulatorServer) -> None:
    sparse(tmp, MAX_INPUT_BYTES + 1)
    validate_batch_input(tmp / "huge.jsonl", endpoint=ENDPOINT)


AIRFLOW_VERSION = tuple(int(part) for part in airflow.__version__.split(".")[:2])


#: The sensor may report bad arguments as they are or as a failure without retry, naming them either way.
SENSOR_ERRORS = (ValueError, AirflowFailException)

CONN_OK = {"host": "http://127.0.0.1:9/v1", "password": "sk-test"}

CASES = [
    # -- input files, through the create operator --------------------------------------------------------
    Case("missing file", "input_file", lambda t, m, e: create(t, input_file=str(t / "nope.jsonl")),
         FileNotFoundError, ("not found", "nope.jsonl")),
    Case("empty file", "input_file", lambda t, m, e: create(t, b""), BatchInputError, ("no requests", "empty_file")),
    Case("directory as file", "input_file", lambda t, m, e: create(t, input_file=str(t)), FileNotFoundError, ()),
    Case("invalid JSON on line 3", "input_file",
         lambda t, m, e: create(t, lines(chat_line(0), chat_line(1), '{"custom_id": "x",')),
         BatchInputError, ("line 3", "invalid JSON")),
    Case("duplicate custom_id", "input_file",
         lambda t, m, e: create(t, lines(chat_line(0), chat_line(1), chat_line(2), chat_line(3, custom_id="req-1"))),
         BatchInputError, ("line 4", "duplicate custom_id", "first seen on line 2")),
    Case("wrong url for the endpoint", "input_file",
         lambda t, m, e: create(t, lines(chat_line(0), chat_line(1, url="/v1/embeddings"))),
         BatchInputError, ("line 2", "url", "/v1/embeddings")),
    Case("mixed models", "input_file",
         lambda t, m, e: create(t, lines(chat_line(0), chat_line(1), chat_line(2, model="gpt-4o"))),
         BatchInputError, ("line 3", "gpt-4o", "one model")),
    Case("50,001 lines", "input_file", lambda t, m, e: create(t, jsonl(50_001)),
         BatchInputError, ("line 50001", "50,001 requests", "50,000")),
    Case("200 MB + 1 byte (operator)", "input_file", _huge, BatchInputError,
         ("file_too_large", f"{MAX_INPUT_BYTES:,}")),
    Case("200 MB + 1 byte (validator)", "validate_batch_input", _huge_path, BatchInputError,
         (f"{MAX_INPUT_BYTES + 1:,} bytes", "over the limit")),
    Case("non-UTF-8 line 2", "input_file",
         lambda t, m, e: create(t, lines(chat_line(0)) + b'{"custom_id": "\xff\xfe"}\n'),
         BatchInputError, ("line 2", "UTF-8", "0xff")),
    Case("UTF-8 BOM", "input_file", lambda t, m, e: create(t, b"\xef\xbb\xbf" + jsonl(2)),
         BatchInputError, ("line 1", "BOM")),
    Case("blank line inside", "input_file", lambda t, m, e: create(t, lines(chat_line(0), "", chat_line(1))),
         BatchInputError, ("line 2", "empty line")),
    Case("line is an array", "input_file", lambda t, m, e: create(t, lines(chat_line(0), "[1, 2]")),
         BatchInputError, ("line 2", "not an object")),
    Case("missing custom_id", "input_file", lambda t, m, e: create(t, lines(without(0, "custom_id"))),
         BatchInputError, ("line 1", "custom_id is missing")),
    Case("method GET", "input_file", lambda t, m, e: create(t, lines(chat_line(0), {**chat_line(1), "method": "GET"})),
         BatchInputError, ("line 2", "POST")),
    Case("missing body", "input_file", lambda t, m, e: create(t, lines(without(0, "body"))),
         BatchInputError, ("line 1", "body is missing")),
    Case("missing model", "input_file",
         lambda t, m, e: create(t, lines({**chat_line(0), "body": {"messages": []}})),
         BatchInputError, ("line 1", "model")),
    Case("stream: true", "input_file", lambda t, m, e: create(t, lines(with_body(0, stream=True))),
         BatchInputError, ("line 1", "stream")),
    Case("NaN in body", "input_file",
         lambda t, m, e: create(t, lines(chat_line(0), json.dumps(chat_line(1))[:-1] + ', "x": NaN}')),
         BatchInputError, ("line 2", "NaN")),
    # -- create operator arguments --------------------------------------------------------------------------
    Case("endpoint without leading slash", "endpoint", lambda t, m, e: create(t, endpoint="v1/chat/completions"),
         ValueError, ("endpoint", "v1/chat/completions")),
    Case("empty endpoint", "endpoint", lambda t, m, e: create(t, endpoint=""), ValueError, ("endpoint",)),
    Case("both input_file and input_file_id", "input_file_id",
         lambda t, m, e: create(t, input_file="a.jsonl", input_file_id="file-1"), ValueError, ("exactly one",)),
    Case("neither input", "input_file_id",
         lambda t, m, e: OpenAIBatchCreateOperator(task_id="c", endpoint=ENDPOINT), ValueError, ("exactly one",)),
    Case("empty input_file_id", "input_file_id", lambda t, m, e: create(t, input_file_id=""),
         ValueError, ("input_file_id", "non-empty")),
    Case("malformed input_file_id", "input_file_id", lambda t, m, e: create(t, input_file_id="file/../../x"),
         ValueError, ("input_file_id", "malformed")),
    Case("empty completion_window", "completion_window", lambda t, m, e: create(t, input_file_id="file-1",
         completion_window=""), ValueError, ("completion_window",)),
    Case("metadata: 17 pairs", "metadata",
         lambda t, m, e: create(t, metadata={f"k{i}": "v" for i in range(17)}), ValueError, ("17 pairs", "16")),
    Case("metadata: 16 pairs leave no room for the tag", "metadata",
         lambda t, m, e: create(t, metadata={f"k{i}": "v" for i in range(16)}), ValueError, ("16 pairs", "15")),
    Case("metadata key of 65 chars", "metadata", lambda t, m, e: create(t, metadata={"k" * 65: "v"}),
         ValueError, ("65 chars", "64")),
    Case("metadata value of 513 chars", "metadata", lambda t, m, e: create(t, metadata={"k": "v" * 513}),
         ValueError, ("513 chars", "512")),
    Case("metadata value not a string", "metadata", lambda t, m, e: create(t, metadata={"k": 1}),
         ValueError, ("'k'", "string")),
    Case("output_expires_after=0", "output_expires_after", lambda t, m, e: create(t, output_expires_after=0),
         ValueError, ("output_expires_after", "positive")),
    Case("output_expires_after=True", "output_expires_after", lambda t, m, e: create(t, output_expires_after=True),
         ValueError, ("output_expires_after",)),
    Case("max_failed_requests=-1", "max_failed_requests",
         lambda t, m, e: OpenAIBatchCreateOperator(task_id="c", endpoint=ENDPOINT, input_file_id="f",
                                                   max_failed_requests=-1), ValueError, ("max_failed_requests",)),
    Case("max_failed_requests=1.5", "max_failed_requests",
         lambda t, m, e: OpenAIBatchSensor(task_id="s", batch_id="b", max_failed_requests=1.5),
         ValueError, ("max_failed_requests", "[0, 1)")),
    # -- sensor, cancel and download arguments ----------------------------------------------------------------
    Case("sensor: empty batch id", "sensor batch_id", lambda t, m, e: sensor(batch_id=""),
         SENSOR_ERRORS, ("batch_id", "non-empty")),
    Case("sensor: malformed batch id", "sensor batch_id", lambda t, m, e: sensor(batch_id="batch_1/../../files"),
         SENSOR_ERRORS, ("batch_id", "malformed")),
    Case("sensor: deferrable, malformed batch id", "sensor batch_id",
         lambda t, m, e: sensor(batch_id="batch 1", deferrable=True), SENSOR_ERRORS, ("batch_id", "malformed")),
    Case("cancel: empty batch id", "cancel batch_id",
         lambda t, m, e: OpenAIBatchCancelOperator(task_id="x", batch_id="").execute({"ti": FakeTI()}),  # type: ignore[arg-type]
         ValueError, ("batch_id",)),
    Case("download: batch_id and file_id", "download",
         lambda t, m, e: OpenAIBatchDownloadOperator(task_id="d", destination=str(t), batch_id="b", file_id="f"),
         ValueError, ("exactly one",)),
    Case("download: malformed file id", "download",
         lambda t, m, e: OpenAIBatchDownloadOperator(task_id="d", destination=str(t), file_id="../etc/passwd").execute(
             {"ti": FakeTI()}), ValueError, ("file_id", "malformed")),  # type: ignore[arg-type]
    # -- hook arguments -----------------------------------------------------------------------------------------
    Case("list limit=0", "list_batches", lambda t, m, e: OpenAIBatchHook().list_batches(limit=0),
         ValueError, ("limit", "0")),
    Case("list limit=101", "list_batches", lambda t, m, e: OpenAIBatchHook().list_batches(limit=101),
         ValueError, ("limit", "101")),
    Case("iter page_size=0", "iter_batches", lambda t, m, e: list(OpenAIBatchHook().iter_batches(page_size=0)),
         ValueError, ("limit",)),
    Case("upload: missing path", "upload_file", lambda t, m, e: OpenAIBatchHook().upload_file(t / "gone.jsonl"),
         FileNotFoundError, ("gone.jsonl",)),
    # -- connection fields ----------------------------------------------------------------------------------------
    Case("base URL without a scheme", "connection host",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "host": "api.openai.com/v1"}), create(t)),
         InvalidConnectionError, ("api.openai.com/v1", "scheme")),
    Case("base URL with a query", "connection host",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "host": "https://x.example/v1?api-version=1"}), create(t)),
         InvalidConnectionError, ("query",)),
    Case("base URL with credentials", "connection host",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "host": "https://u:pw@x.example/v1"}), create(t)),
         InvalidConnectionError, ("credentials",)),
    Case("missing API key", "connection password",
         lambda t, m, e: (with_conn(m, {"host": e.base_url}), create(t)), InvalidConnectionError, ("API key",)),
    Case("blank API key", "connection password",
         lambda t, m, e: (with_conn(m, {"host": e.base_url, "password": "   "}), create(t)),
         InvalidConnectionError, ("API key",)),
    Case("unknown api_type", "connection extra",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "extra": {"api_type": "gemini"}}), sensor(batch_id="batch_1")),
         (InvalidConnectionError, AirflowFailException), ("api_type", "gemini")),
    Case("extra not JSON", "connection extra",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "extra": "{not json"}), create(t)),
         InvalidConnectionError, ("Extra", "JSON"), min_airflow=(3, 2)),
    Case("timeout not a number", "connection extra",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "extra": {"timeout": "soon"}}), create(t)),
         InvalidConnectionError, ("timeout", "number")),
    Case("max_retries=100", "connection extra",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "extra": {"max_retries": 100}}), create(t)),
         InvalidConnectionError, ("max_retries", "20")),
    Case("verify_ssl=maybe", "connection extra",
         lambda t, m, e: (with_conn(m, {**CONN_OK, "extra": {"verify_ssl": "maybe"}}), create(t)),
         InvalidConnectionError, ("verify_ssl",)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_before_any_request(
    case: Case, conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Older Airflow rejects some connections itself, before the provider sees them, and outside a task its
    # error is not ours to word: there, check only that the call fails and sends nothing.
    ours_to_word = case.min_airflow <= AIRFLOW_VERSION
    before = conn.counters
    REGISTRY.bad_input(f"{case.entry}: {case.name}")
    with pytest.raises(case.error if ours_to_word else Exception) as info:
        case.run(tmp_path, monkeypatch, conn)
    text = str(info.value)
    for fragment in case.says if ours_to_word else ():
        assert fragment in text, f"{case.name}: {fragment!r} not in {text!r}"
    after = conn.counters
    assert after.requests == before.requests, f"{case.name}: {after.requests - before.requests} request(s) were sent"
    assert after.files_uploaded == before.files_uploaded and after.batches_created == before.batches_created


@pytest.mark.parametrize(
    ("name", "kwargs", "param"),
    [
        ("completion window 48h", {"completion_window": "48h"}, "completion_window"),
        ("endpoint /v1/audio/transcriptions", {"endpoint": "/v1/audio/transcriptions"}, "endpoint"),
    ],
)
def test_service_judged_rejection_leaves_nothing_behind(
    name: str, kwargs: dict[str, Any], param: str, conn: EmulatorServer, tmp_path: Path
) -> None:
    """Only the service knows which endpoints and windows it runs: its 400 is reported, the upload undone."""
    REGISTRY.bad_input(f"service-judged: {name}")
    endpoint = kwargs.get("endpoint", ENDPOINT)
    content = jsonl(2, url=endpoint)
    files_before = set(conn.files)
    created_before = conn.counters.batches_created
    with pytest.raises(BadRequestError) as info:
        create(tmp_path, content, **kwargs)
    error = info.value
    assert error.status_code == 400 and error.param == param
    assert str(kwargs[param]) in str(error) and "POST /batches" in str(error)
    assert conn.counters.files_uploaded >= 1  # it was uploaded ...
    assert set(conn.files) == files_before  # ... and deleted again
    assert conn.counters.batches_created == created_before


def test_case_count() -> None:
    assert len(CASES) + 2 >= 30
    assert len({c.name for c in CASES}) == len(CASES)
