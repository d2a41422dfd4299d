"""The "OpenAI Batch" extra link: built from the batch_id XCom, no network call."""

from __future__ import annotations

from typing import Any

import pytest
from airflow_compat import TaskInstanceKey

from airflow_provider_openai_batch.links import OpenAIBatchLink
from airflow_provider_openai_batch.operators.batch import (
    OpenAIBatchCancelOperator,
    OpenAIBatchCreateOperator,
    OpenAIBatchDownloadOperator,
)
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor

KEY = TaskInstanceKey(dag_id="dag", task_id="create", run_id="run_1", try_number=1, map_index=-1)


@pytest.fixture
def xcom(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The XComs ``get_link`` may read, keyed by XCom key; records every lookup."""
    from airflow.sdk.execution_time.xcom import XCom

    store: dict[str, Any] = {"lookups": []}

    def get_value(*, ti_key: Any, key: str) -> Any:
        store["lookups"].append((ti_key, key))
        return store.get(key)

    monkeypatch.setattr(XCom, "get_value", staticmethod(get_value))
    return store


def operator() -> OpenAIBatchCreateOperator:
    return OpenAIBatchCreateOperator(task_id="create", endpoint="/v1/chat/completions", input_file_id="file-1")


def test_link_to_the_batch_page(xcom: dict[str, Any]) -> None:
    xcom["batch_id"] = "batch_abc123"
    assert OpenAIBatchLink().get_link(operator(), ti_key=KEY) == "https://platform.openai.com/batches/batch_abc123"
    assert xcom["lookups"] == [(KEY, "batch_id")]


@pytest.mark.parametrize("value", [None, "", 42, {"id": "batch_x"}])
def test_no_link_without_a_batch_id(xcom: dict[str, Any], value: Any) -> None:
    xcom["batch_id"] = value
    assert OpenAIBatchLink().get_link(operator(), ti_key=KEY) == ""


def test_link_name() -> None:
    assert OpenAIBatchLink.name == "OpenAI Batch"


@pytest.mark.parametrize("cls", [OpenAIBatchCreateOperator, OpenAIBatchCancelOperator, OpenAIBatchSensor])
def test_operators_that_know_a_batch_carry_the_link(cls: type) -> None:
    assert any(isinstance(link, OpenAIBatchLink) for link in cls.operator_extra_links)


def test_download_operator_has_no_batch_link() -> None:
    assert not getattr(OpenAIBatchDownloadOperator, "operator_extra_links", ())
