"""Batch input read from S3 and results written to S3, through Airflow's ObjectStoragePath and s3fs, against a
real S3-compatible server (moto's) that this module starts on loopback in its own process and stops at the end.

The memory checks compare the traced peak of the same operator call on a local file and on S3: object storage
must stream like a local file does. Both servers then run in child processes, so only the operator's memory
is counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import moto.server  # noqa: F401  (the dev group installs it on every leg: a missing one must fail, not skip)
import pytest
import s3fs
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import attach
from airflow.sdk.io.store import _STORE_CACHE

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
from tests._kit.ti import FakeTI, context

MiB = 1024 * 1024
BUCKET = "batches"
STORE = "moto_s3"  # the conn_id part of s3://moto_s3@bucket/key: selects the filesystem attached below
BIG_REQUESTS = 24_000  # about 40 MB of input: far more than any buffer the streaming paths may hold
# Above the local-file peak (a few MB) by more than object storage's own buffers (a few blocks of
# STORAGE_BLOCK_SIZE, about 16 MB measured) and allocator noise, and far below the file: fsspec's default
# 50 MiB blocks, which hold the whole file, peak at about 80 MB (input) and 125 MB (download).
EXTRA_PEAK_ALLOWED = 6 * STORAGE_BLOCK_SIZE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(command: list[str], *, ready: Callable[[subprocess.Popen[str]], str | None]) -> Iterator[str]:
    """Run a server in a child process until the block ends; ``ready`` returns its URL once it answers."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while (url := ready(process)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, in a child process, for this module."""
    url = f"http://127.0.0.1:{_free_port()}"

    def answers(_: subprocess.Popen[str]) -> str | None:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return url
        except OSError:
            return None

    port = url.rsplit(":", 1)[1]
    with serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port], ready=answers) as started:
        yield started


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
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=s3_endpoint,
        client_kwargs={"region_name": "eu-west-1"},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    attach(protocol="s3", conn_id=STORE, fs=fs)
    try:
        yield fs
    finally:
        _STORE_CACHE.pop(f"s3-{STORE}", None)


def s3_path(key: str) -> str:
    return f"s3://{STORE}@{BUCKET}/{key}"


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
