"""Downloads (hooks/_content.py) against the emulator: the file's mode follows the umask, as open() does."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_downloaded_file_gets_the_mode_the_umask_gives(
    openai_conn: EmulatorServer, tmp_path: Path, umask: None, mask: int, mode: int
) -> None:
    hook = OpenAIBatchHook()
    file_id = hook.upload_file(io.BytesIO(b'{"a": 1}\n'), filename="in.jsonl").id
    os.umask(mask)

    target = tmp_path / "out" / "results.jsonl"
    assert hook.download_file(file_id, target) == 9

    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert target.read_bytes() == b'{"a": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["results.jsonl"]  # no temporary file left behind
