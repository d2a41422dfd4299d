"""The Create operator checks its input against the connection's per-file limits, or its own override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import BatchInputError
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator
from tests._kit.batches import ENDPOINT, write_jsonl
from tests._kit.connection import set_connection
from tests._kit.ti import context


def create(path: Path, **kwargs: Any) -> str:
    op = OpenAIBatchCreateOperator(task_id="create", endpoint=ENDPOINT, input_file=str(path), **kwargs)
    return op.execute(context())


def test_connection_limit_rejects_before_upload_and_names_it(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, emulator.base_url, batch_max_requests=3)
    with pytest.raises(BatchInputError) as info:
        create(write_jsonl(tmp_path / "in.jsonl", 4))
    assert [problem.code for problem in info.value.problems] == ["too_many_requests"]
    assert "checked against the limits 3 requests" in str(info.value)
    assert emulator.files == {}


def test_operator_override_replaces_the_connection_limit(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, emulator.base_url, batch_max_requests=3)
    batch_id = create(write_jsonl(tmp_path / "in.jsonl", 4), max_requests=10)
    assert emulator.get_batch(batch_id)["status"] in ("validating", "in_progress", "finalizing", "completed")
    with pytest.raises(BatchInputError, match="2 requests"):
        create(write_jsonl(tmp_path / "in.jsonl", 3), max_requests=2)


def test_azure_connection_allows_more_requests_than_openai(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_connection(monkeypatch, emulator.base_url, api_type="azure")
    op = OpenAIBatchCreateOperator(task_id="create", endpoint=ENDPOINT, input_file=str(tmp_path / "x.jsonl"))
    assert op.hook.settings.file_limits.max_requests == 100_000
    set_connection(monkeypatch, emulator.base_url, conn_id="plain")
    plain = OpenAIBatchCreateOperator(task_id="c", endpoint=ENDPOINT, input_file="x.jsonl", conn_id="plain")
    assert plain.hook.settings.file_limits.max_requests == 50_000
