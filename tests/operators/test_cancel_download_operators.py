"""OpenAIBatchCancelOperator and OpenAIBatchDownloadOperator against the emulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import NotFoundError
from airflow_provider_openai_batch.job.names import local_file_name
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCancelOperator, OpenAIBatchDownloadOperator
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests._kit.airflow_compat import AirflowFailException, TaskDeferred
from tests._kit.batches import batch_in_status, new_batch, wait_for_completed, wait_for_status
from tests._kit.ti import FakeTI, context

CANCEL = "POST /v1/batches/{id}/cancel"


def cancel_op(batch_id: str, **kwargs: Any) -> OpenAIBatchCancelOperator:
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("poll_interval", 0.05)
    return OpenAIBatchCancelOperator(task_id="cancel", batch_id=batch_id, **kwargs)


def running_batch(emulator: EmulatorServer) -> str:
    """A hold batch with half its requests done, so that cancelling it leaves partial output."""
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(emulator, batch.id, "in_progress")
    wait_for_completed(emulator, batch.id, 2)
    return batch.id


# -- cancel -----------------------------------------------------------------------------------------------


def test_cancel_waits_until_cancelled_and_pushes_the_partial_output(openai_conn: EmulatorServer) -> None:
    batch_id = running_batch(openai_conn)
    ti = FakeTI()

    status = cancel_op(batch_id).execute(context(ti))

    assert status == "cancelled"
    final = openai_conn.get_batch(batch_id)
    assert final["status"] == "cancelled"
    assert final["output_file_id"] is not None
    assert ti.xcoms["batch_id"] == batch_id
    assert ti.xcoms["output_file_id"] == final["output_file_id"]
    assert ti.xcoms["batch"]["status"] == "cancelled"
    # The requests that ran before the cancel are billed: their cost is reported too.
    assert ti.xcoms["cost"]["input_tokens"] == final["usage"]["input_tokens"] > 0
    assert ti.xcoms["cost"]["cost_usd"] > 0
    assert openai_conn.counters[CANCEL] == 1


def test_cancel_without_waiting_returns_cancelling(openai_conn: EmulatorServer) -> None:
    batch_id = running_batch(openai_conn)
    openai_conn.set_phase_seconds(5)  # cancelling lasts longer than the test
    assert cancel_op(batch_id, wait_for_completion=False).execute(context()) == "cancelling"


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_cancel_of_a_finished_batch_reports_and_does_not_fail(openai_conn: EmulatorServer, status: str) -> None:
    batch = batch_in_status(openai_conn, status)
    openai_conn.reset_counters()
    ti = FakeTI()

    assert cancel_op(batch.id).execute(context(ti)) == status

    assert openai_conn.counters[CANCEL] == 0
    assert ti.xcoms["batch"]["status"] == status


def test_cancel_deferrable(openai_conn: EmulatorServer) -> None:
    batch_id = running_batch(openai_conn)
    ti = FakeTI()

    with pytest.raises(TaskDeferred) as info:
        cancel_op(batch_id, deferrable=True).execute(context(ti))

    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert isinstance(deferred.trigger, OpenAIBatchTrigger)
    assert deferred.trigger.batch_id == batch_id
    assert deferred.trigger.cancel_on_kill is False  # killing a cancel task must not do anything surprising
    assert ti.pushes == [("batch_id", batch_id)]

    async def drain() -> list[dict[str, Any]]:
        return [event.payload async for event in deferred.trigger.run()]

    (event,) = asyncio.run(asyncio.wait_for(drain(), 10))
    assert cancel_op(batch_id, deferrable=True).execute_complete(context(ti), event) == "cancelled"
    assert ti.xcoms["output_file_id"] == openai_conn.get_batch(batch_id)["output_file_id"]


def test_cancel_of_an_unknown_batch_fails(openai_conn: EmulatorServer) -> None:
    with pytest.raises(NotFoundError):
        cancel_op("batch_unknown").execute(context())


# -- download -----------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_download_output_and_error_files_to_a_folder(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    batch = new_batch(5, failing=2)
    done = wait_for_status(openai_conn, batch.id, "completed")
    dest = tmp_path / "results"

    result = OpenAIBatchDownloadOperator(task_id="dl", batch_id=batch.id, destination=str(dest)).execute(context())

    output, error = result["output"], result["error"]
    assert output["file_id"] == done["output_file_id"]
    assert error["file_id"] == done["error_file_id"]
    assert Path(output["path"]) == dest / f"{batch.id}_output.jsonl"
    assert Path(error["path"]) == dest / f"{batch.id}_error.jsonl"
    assert output["lines"] == 3 and error["lines"] == 2
    assert output["lines"] + error["lines"] == done["request_counts"]["total"]
    out_lines, err_lines = read_jsonl(Path(output["path"])), read_jsonl(Path(error["path"]))
    assert sorted(line["custom_id"] for line in out_lines) == ["req-2", "req-3", "req-4"]
    assert sorted(line["custom_id"] for line in err_lines) == ["req-0", "req-1"]
    assert output["bytes"] == Path(output["path"]).stat().st_size == len(openai_conn.file_content(output["file_id"]))
    json.dumps(result)  # the return value goes to XCom


@pytest.mark.parametrize("form", ["object_storage_path", "file_uri"])
def test_download_to_object_storage(openai_conn: EmulatorServer, tmp_path: Path, form: str) -> None:
    batch = new_batch(4, failing=1)
    done = wait_for_status(openai_conn, batch.id, "completed")
    dest = tmp_path / "store"
    dest.mkdir()
    destination: Any = ObjectStoragePath(f"file://{dest}") if form == "object_storage_path" else f"file://{dest}"

    result = OpenAIBatchDownloadOperator(task_id="dl", batch_id=batch.id, destination=destination).execute(context())

    assert result["output"]["lines"] == 3 and result["error"]["lines"] == 1
    written = dest / f"{batch.id}_output.jsonl"
    assert written.read_bytes() == openai_conn.file_content(done["output_file_id"])
    assert (dest / f"{batch.id}_error.jsonl").read_bytes() == openai_conn.file_content(done["error_file_id"])
    assert result["output"]["bytes"] == written.stat().st_size


def test_download_of_a_running_batch_fails_clearly(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    batch = new_batch(4, metadata={"emulator": "hold"})
    wait_for_status(openai_conn, batch.id, "in_progress")

    with pytest.raises(AirflowFailException, match=rf"{batch.id} is still in_progress.*OpenAIBatchSensor"):
        OpenAIBatchDownloadOperator(task_id="dl", batch_id=batch.id, destination=tmp_path).execute(context())
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_failed_batch_fails_clearly(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    batch = batch_in_status(openai_conn, "failed")
    with pytest.raises(AirflowFailException, match="no output or error file"):
        OpenAIBatchDownloadOperator(task_id="dl", batch_id=batch.id, destination=tmp_path).execute(context())


def test_download_without_errors(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    batch = new_batch(4, failing=1)
    wait_for_status(openai_conn, batch.id, "completed")
    result = OpenAIBatchDownloadOperator(
        task_id="dl", batch_id=batch.id, destination=tmp_path, include_errors=False
    ).execute(context())
    assert result["error"] is None
    assert [p.name for p in tmp_path.iterdir()] == [f"{batch.id}_output.jsonl"]


def test_download_partial_results_of_a_cancelled_batch(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    batch = batch_in_status(openai_conn, "cancelled")
    result = OpenAIBatchDownloadOperator(task_id="dl", batch_id=batch.id, destination=tmp_path).execute(context())
    assert result["output"]["lines"] == batch.request_counts.completed
    assert result["error"]["lines"] == batch.request_counts.total - batch.request_counts.completed


def test_download_one_file_by_id(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    batch = batch_in_status(openai_conn, "completed")
    assert batch.output_file_id is not None
    result = OpenAIBatchDownloadOperator(task_id="dl", file_id=batch.output_file_id, destination=tmp_path).execute(
        context()
    )
    assert result["error"] is None
    assert result["output"]["lines"] == 3
    assert (tmp_path / f"{batch.output_file_id}.jsonl").exists()


@pytest.mark.parametrize("form", ["folder", "file_uri"])
def test_download_with_gateway_long_ids_names_files_safely(
    openai_conn: EmulatorServer, tmp_path: Path, form: str
) -> None:
    # A LiteLLM-style gateway: every file and batch id is about 330 characters, longer than a file name may be.
    openai_conn.set_id_length(330)
    batch = new_batch(5, failing=2)
    done = wait_for_status(openai_conn, batch.id, "completed")
    assert len(batch.id) == len(done["output_file_id"]) == 330
    dest = tmp_path / "results"
    dest.mkdir()
    destination = str(dest) if form == "folder" else f"file://{dest}"

    result = OpenAIBatchDownloadOperator(task_id="dl", batch_id=batch.id, destination=destination).execute(context())
    one = OpenAIBatchDownloadOperator(task_id="one", file_id=done["output_file_id"], destination=destination)
    single = one.execute(context())["output"]

    names = {
        local_file_name(batch.id, suffix="_output.jsonl"): done["output_file_id"],
        local_file_name(batch.id, suffix="_error.jsonl"): done["error_file_id"],
        local_file_name(done["output_file_id"]): done["output_file_id"],
    }
    assert sorted(p.name for p in dest.iterdir()) == sorted(names)
    for name, file_id in names.items():
        assert len(name.encode()) < 255 and name.startswith((batch.id[:30], file_id[:30]))
        assert (dest / name).read_bytes() == openai_conn.file_content(file_id)
    assert result["output"]["path"].endswith(local_file_name(batch.id, suffix="_output.jsonl"))
    assert (result["output"]["lines"], result["error"]["lines"], single["lines"]) == (3, 2, 3)
    assert result["output"]["file_id"] == single["file_id"] == done["output_file_id"]  # the whole id, in XCom


def test_download_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        OpenAIBatchDownloadOperator(task_id="dl", destination="/tmp")
    with pytest.raises(ValueError, match="exactly one"):
        OpenAIBatchDownloadOperator(task_id="dl", destination="/tmp", batch_id="b", file_id="f")
