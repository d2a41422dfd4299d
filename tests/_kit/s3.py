"""A real S3-compatible server (moto's) on loopback in a child process, and an empty bucket on it that Airflow's
``ObjectStoragePath`` reaches as ``s3://moto_s3@batches/<key>`` through s3fs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import moto.server  # noqa: F401  (the dev group installs it on every leg: a missing one must fail, not skip)
import pytest
import s3fs
from airflow.sdk.io import attach
from airflow.sdk.io.store import _STORE_CACHE

BUCKET = "batches"
STORE = "moto_s3"  # the conn_id part of s3://moto_s3@bucket/key: selects the filesystem attached below


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


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, in a child process (a module fixture starts it once); yields its URL."""
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


@contextlib.contextmanager
def empty_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An empty :data:`BUCKET` on ``endpoint``, and ``s3://moto_s3@...`` paths attached to an s3fs filesystem on it
    (no listing cache: what a test wrote is what it reads); yields that filesystem."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=endpoint,
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
    """The ``ObjectStoragePath`` URI of ``key`` in the bucket of :func:`empty_bucket`."""
    return f"s3://{STORE}@{BUCKET}/{key}"
