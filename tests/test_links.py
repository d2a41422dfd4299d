"""The "OpenAI Batch" extra link: from the batch_id XCom and the connection, per service; no network call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_openai_batch.links import OpenAIBatchLink, console_url
from airflow_provider_openai_batch.operators.batch import (
    OpenAIBatchCancelOperator,
    OpenAIBatchCreateOperator,
    OpenAIBatchDownloadOperator,
)
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor
from tests._kit.airflow_compat import TaskInstanceKey

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


def operator(conn_id: str = "openai_default") -> OpenAIBatchCreateOperator:
    return OpenAIBatchCreateOperator(
        task_id="create", endpoint="/v1/chat/completions", input_file_id="file-1", conn_id=conn_id
    )


def use_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = "openai_default", **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "openai_batch", **fields}))


def link(monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any], **fields: Any) -> str:
    use_connection(monkeypatch, **fields)
    xcom["batch_id"] = "batch_abc123"
    return OpenAIBatchLink().get_link(operator(), ti_key=KEY)


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "https://api.openai.com/v1",
        "https://api.openai.com",
        "api.openai.com/v1",
        "https://eu.api.openai.com/v1",
    ],
)
def test_openais_api_host_links_to_the_platform(
    monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any], host: Any
) -> None:
    fields = {"password": "sk-x"} if host is None else {"password": "sk-x", "host": host}
    assert link(monkeypatch, xcom, **fields) == "https://platform.openai.com/batches/batch_abc123"
    assert xcom["lookups"] == [(KEY, "batch_id")]


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        ("https://myres.openai.azure.com/openai/v1", {"api_type": "azure"}),
        ("https://myres.openai.azure.com/openai", {"api_type": "azure", "api_version": "2024-10-21"}),
        ("https://llm-gateway.internal/v1", {}),
        ("http://127.0.0.1:8787/v1", {}),
        ("https://api.openai.com.evil.example/v1", {}),
        ("https://notapi.openai.com/v1", {}),
    ],
)
def test_other_services_get_no_link(
    monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any], host: str, extra: dict[str, Any]
) -> None:
    assert link(monkeypatch, xcom, password="k", host=host, extra=extra) == ""


@pytest.mark.parametrize(
    ("host", "template", "expected"),
    [
        (
            "https://myres.openai.azure.com/openai/v1",
            "https://ai.azure.com/resource/batchjob/{batch_id}?wsid=/subscriptions/s/x",
            "https://ai.azure.com/resource/batchjob/batch_abc123?wsid=/subscriptions/s/x",
        ),
        (
            "http://127.0.0.1:8787/v1",
            "http://127.0.0.1:8787/v1/batches/{batch_id}",
            "http://127.0.0.1:8787/v1/batches/batch_abc123",
        ),
        (
            "https://api.openai.com/v1",
            "https://console.example/{batch_id}/{other}",
            "https://console.example/batch_abc123/{other}",
        ),
    ],
)
def test_a_console_url_template_sets_the_link_for_any_service(
    monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any], host: str, template: str, expected: str
) -> None:
    assert link(monkeypatch, xcom, password="k", host=host, extra={"console_url": template}) == expected


def test_an_empty_template_falls_back_to_the_host_rule() -> None:
    assert console_url("b1", host=None, extra={"console_url": "  "}) == "https://platform.openai.com/batches/b1"
    assert console_url("b1", host="http://127.0.0.1:1/v1", extra={"console_url": ""}) == ""


def test_the_batch_id_is_percent_encoded() -> None:
    assert console_url("a/b c", host=None, extra={}) == "https://platform.openai.com/batches/a%2Fb%20c"
    assert console_url("a/b", host=None, extra={"console_url": "https://x/{batch_id}"}) == "https://x/a%2Fb"


def test_the_operators_own_connection_is_used(monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any]) -> None:
    use_connection(monkeypatch, "openai_default", password="k")
    use_connection(monkeypatch, "gateway", password="k", host="https://llm-gateway.internal/v1")
    xcom["batch_id"] = "batch_abc123"
    assert OpenAIBatchLink().get_link(operator("gateway"), ti_key=KEY) == ""
    assert OpenAIBatchLink().get_link(operator(), ti_key=KEY).startswith("https://platform.openai.com/")


def test_no_link_when_the_connection_cannot_be_read(monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any]) -> None:
    xcom["batch_id"] = "batch_abc123"
    assert OpenAIBatchLink().get_link(operator("no_such_connection_here"), ti_key=KEY) == ""


@pytest.mark.parametrize("value", [None, "", 42, {"id": "batch_x"}])
def test_no_link_without_a_batch_id(monkeypatch: pytest.MonkeyPatch, xcom: dict[str, Any], value: Any) -> None:
    use_connection(monkeypatch, password="k")
    xcom["batch_id"] = value
    assert OpenAIBatchLink().get_link(operator(), ti_key=KEY) == ""


def test_link_name() -> None:
    assert OpenAIBatchLink.name == "OpenAI Batch"


@pytest.mark.parametrize("cls", [OpenAIBatchCreateOperator, OpenAIBatchCancelOperator, OpenAIBatchSensor])
def test_operators_that_know_a_batch_carry_the_link(cls: type) -> None:
    assert any(isinstance(link, OpenAIBatchLink) for link in cls.operator_extra_links)


def test_download_operator_has_no_batch_link() -> None:
    assert not getattr(OpenAIBatchDownloadOperator, "operator_extra_links", ())
