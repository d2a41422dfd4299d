"""Batch input read from S3 and results written to S3, through Airflow's ObjectStoragePath and s3fs, against a
real S3-compatible server (moto's) that this module starts on loopback in its own process and stops at the end.

The memory checks compare the traced peak of the same operator call on a local file and on S3: object storage
must stream like a local file does. Both servers then run in child processes, so only the operator's memory
is counted.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.batch_input import STORAGE_BLOCK_SIZE, read_results
from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.emulator.launch import command, launch
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch import (
    OpenAIBatchCreateOperator,
    OpenAIBatchDownloadOperator,
)
from tests._kit.batches import ENDPOINT, MODEL
from tests._kit.connection import set_connection
from tests._kit.memory_tracing import traced_peak
from tests._kit.s3 import BUCKET, empty_bucket, moto_server, s3_path
from tests._kit.ti import FakeTI, context

MiB = 1024 * 1024
BIG_REQUESTS = 24_000  # about 40 MB of input: far more than any buffer the streaming paths may hold
# Above the local-file peak (a few MB) by more than object storage's own buffers (a few blocks of
# STORAGE_BLOCK_SIZE, about 16 MB measured) and allocator noise, and far below the file: fsspec's default
# 50 MiB blocks, which hold the whole file, peak at about 80 MB (input) and 125 MB (download).
EXTRA_PEAK_ALLOWED = 6 * STORAGE_BLOCK_SIZE


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, in a child process, for this module."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def emulator_process() -> Iterator[str]:
    """The emulator in a child process, so that a traced peak counts only the operator's memory."""

    started = launch(command(phase_seconds=0.05))
    try:
        yield started.base_url
    finally:
        started.stop()


def uploaded_input(batch_id: str) -> bytes:
    hook = OpenAIBatchHook()
    sink = io.BytesIO()
    hook.download_file(hook.retrieve_batch(batch_id).input_file_id, sink)
    return sink.getvalue()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An empty bucket, and ``s3://moto_s3@...`` paths attached to an s3fs filesystem on the loopback server."""
    with empty_bucket(s3_endpoint, monkeypatch) as fs:
        yield fs


def chat_lines(n: int, *, filler: str = "") -> bytes:
    out = io.BytesIO()
    for i in range(n):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"prompt {i} {filler}"}]}
        line = {"custom_id": f"req-{i}", "method": "POST", "url": ENDPOINT, "body": body}
        out.write(json.dumps(line).encode() + b"\n")
    return out.getvalue()


def report(local_peak: int, s3_peak: int) -> str:
    return f"local {local_peak / MiB:.1f} MB, S3 {s3_peak / MiB:.1f} MB"


def create_op(input_file: Any, **kwargs: Any) -> OpenAIBatchCreateOperator:
    return OpenAIBatchCreateOperator(
        task_id="create", endpoint=ENDPOINT, input_file=input_file, poll_interval=0.05, deferrable=False, **kwargs
    )


def test_input_from_s3_to_results_on_s3(openai_conn: EmulatorServer, s3: Any) -> None:
    content = chat_lines(5)
    s3.pipe(f"{BUCKET}/in/input.jsonl", content)

    batch_id = create_op(s3_path("in/input.jsonl"), wait_for_completion=True).execute(context())

    uploaded = openai_conn.get_batch(batch_id)["input_file_id"]
    assert openai_conn.file_content(uploaded) == content
    download = OpenAIBatchDownloadOperator(task_id="download", batch_id=batch_id, destination=s3_path("out"))
    result = download.execute(context())
    assert result["output"]["path"].endswith(f"out/{batch_id}_output.jsonl")
    assert result["output"]["lines"] == 5 and result["error"] is None
    with ObjectStoragePath(s3_path(f"out/{batch_id}_output.jsonl")).open("rb") as stream:
        results = read_results(stream)
    assert sorted(results) == [f"req-{i}" for i in range(5)]
    assert all(r.ok for r in results.values())


def test_invalid_input_on_s3_is_rejected_with_its_line_before_upload(openai_conn: EmulatorServer, s3: Any) -> None:
    s3.pipe(f"{BUCKET}/in/bad.jsonl", chat_lines(2) + b'{"custom_id": "x",\n')
    with pytest.raises(ValueError, match="line 3"):
        create_op(s3_path("in/bad.jsonl")).execute(context())
    assert openai_conn.files == {}


@pytest.mark.slow
def test_input_on_s3_streams_like_a_local_file(
    emulator_process: str, s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, emulator_process)
    content = chat_lines(BIG_REQUESTS, filler="lorem ipsum " * 130)
    assert len(content) > 36 * MiB
    local = tmp_path / "input.jsonl"
    local.write_bytes(content)
    with s3.open(f"{BUCKET}/in/big.jsonl", "wb", block_size=8 * MiB) as out:
        out.write(content)
    OpenAIBatchHook().get_conn()  # connection and session set-up are not part of the measurement

    # Two runs, so that the second is not the first's batch reused (same task, same input hash).
    local_id, local_peak = traced_peak(lambda: create_op(local).execute(context(FakeTI(run_id="local"))))
    s3_id, s3_peak = traced_peak(lambda: create_op(s3_path("in/big.jsonl")).execute(context(FakeTI(run_id="s3"))))
    with capsys.disabled():
        print(f"\n{len(content) / MiB:.0f} MB input, traced peak: {report(local_peak, s3_peak)}")

    digest = hashlib.sha256(content).hexdigest()
    assert local_id != s3_id
    for batch_id in (local_id, s3_id):
        assert hashlib.sha256(uploaded_input(batch_id)).hexdigest() == digest
    assert s3_peak < local_peak + EXTRA_PEAK_ALLOWED


@pytest.mark.slow
def test_download_to_s3_streams_like_a_local_file(
    emulator_process: str, s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, emulator_process)
    content = chat_lines(BIG_REQUESTS, filler="lorem ipsum " * 130)
    hook = OpenAIBatchHook()
    file_id = hook.upload_file(io.BytesIO(content), filename="big.jsonl").id

    def download(destination: str) -> dict[str, Any]:
        op = OpenAIBatchDownloadOperator(task_id="download", file_id=file_id, destination=destination)
        return op.execute(context())["output"]

    local, local_peak = traced_peak(lambda: download(str(tmp_path)))
    remote, s3_peak = traced_peak(lambda: download(s3_path("results")))
    with capsys.disabled():
        print(f"\n{len(content) / MiB:.0f} MB download, traced peak: {report(local_peak, s3_peak)}")

    assert local["lines"] == remote["lines"] == BIG_REQUESTS
    assert local["bytes"] == remote["bytes"] == len(content)
    assert s3.cat(f"{BUCKET}/results/{file_id}.jsonl") == content
    assert s3_peak < local_peak + EXTRA_PEAK_ALLOWED
