"""Every example DAG imports without errors or network access and has the expected tasks."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path
from typing import Any

import pytest

try:  # Airflow 3.1+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # pragma: no cover - older layout
    from airflow.models import DagBag  # type: ignore[no-redef]

pytestmark = pytest.mark.unit

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

EXPECTED_TASKS = {
    "openai_batch_chat": {"write_input", "create_batch", "wait_for_batch", "download_results", "summarize"},
    "openai_batch_wait_in_create": {"write_input", "create_and_wait", "download_results", "answers"},
    "openai_batch_mapped": {
        "write_shards",
        "results_dir",
        "create_batch",
        "wait_for_batch",
        "download_results",
        "gather",
    },
    "openai_batch_cancel": {"write_input", "create_batch", "cancel_batch", "report"},
    "openai_batch_embeddings": {"write_input", "create_and_wait", "download_results", "vectors"},
    "openai_batch_large_job": {"write_input", "run_job", "check_order"},
}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    real_connect = socket.socket.connect

    def no_network(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"an example DAG opened a connection to {address} while being parsed")

    socket.socket.connect = no_network  # type: ignore[method-assign]
    try:
        kwargs: dict[str, Any] = {"dag_folder": str(EXAMPLE_DAGS), "safe_mode": False}
        if "include_examples" in inspect.signature(DagBag.__init__).parameters:  # older DagBag
            kwargs["include_examples"] = False
        return DagBag(**kwargs)
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}


def test_every_example_is_found(dagbag: Any) -> None:
    assert set(dagbag.dag_ids) == set(EXPECTED_TASKS)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_tasks(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert set(dag.task_ids) == EXPECTED_TASKS[dag_id]
    assert dag.doc_md and dag.doc_md.strip(), "the module docstring says what the example shows"
    assert dag.schedule is None or dag.timetable.summary in ("None", "Never, external triggers only")


def test_deferrable_waits_use_the_poll_interval_variable(dagbag: Any) -> None:
    """The poll interval comes from OPENAI_BATCH_POLL_INTERVAL (60 s unless set) in every example."""
    import os

    expected = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
    chat = dagbag.dags["openai_batch_chat"]
    assert chat.get_task("wait_for_batch").deferrable is True
    assert chat.get_task("wait_for_batch").poll_interval == expected
    assert dagbag.dags["openai_batch_wait_in_create"].get_task("create_and_wait").poll_interval == expected


def test_sensor_waits_on_the_created_batch(dagbag: Any) -> None:
    chat = dagbag.dags["openai_batch_chat"]
    assert "create_batch" in chat.get_task("wait_for_batch").upstream_task_ids
    assert {"create_batch", "wait_for_batch"} <= chat.get_task("download_results").upstream_task_ids
