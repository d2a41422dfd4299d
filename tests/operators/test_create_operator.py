"""OpenAIBatchCreateOperator against the emulator: inputs, validation, XCom order, idempotency, cleanup, kill."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import BadRequestError, BatchInputError
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY, OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests._kit.airflow_compat import AirflowException, AirflowFailException, TaskDeferred
from tests._kit.batches import ENDPOINT, invalid_jsonl, jsonl, wait_for_status, write_jsonl
from tests._kit.operators import create_op
from tests._kit.ti import FakeTI, context


def upload(content: bytes) -> str:
    return OpenAIBatchHook().upload_file(io.BytesIO(content), filename="input.jsonl").id


def batch_files(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [f for f in emulator.files.values() if f["purpose"] == "batch"]


def run_trigger(trigger: OpenAIBatchTrigger) -> list[dict[str, Any]]:
    async def drain() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(drain(), 10))


# -- inputs --------------------------------------------------------------------------------------------


def test_from_an_uploaded_file_id(openai_conn: EmulatorServer) -> None:
    file_id = upload(jsonl(3))
    ti = FakeTI()

    batch_id = create_op(input_file_id=file_id).execute(context(ti))

    assert list(openai_conn.batches) == [batch_id]
    created = openai_conn.get_batch(batch_id)
    assert created["input_file_id"] == file_id
    assert created["endpoint"] == ENDPOINT
    assert created["metadata"][IDEMPOTENCY_METADATA_KEY]
    assert ti.pushes == [("batch_id", batch_id)]
    assert openai_conn.counters["files_uploaded"] == 1  # only the test's own upload


@pytest.mark.parametrize("form", ["str", "path", "file_uri", "object_storage_path"])
def test_from_a_local_input_file(openai_conn: EmulatorServer, tmp_path: Path, form: str) -> None:
    path = write_jsonl(tmp_path / "requests.jsonl", 5)
    source: Any = {
        "str": str(path),
        "path": path,
        "file_uri": f"file://{path}",
        "object_storage_path": ObjectStoragePath(f"file://{path}"),
    }[form]
    ti = FakeTI()

    batch_id = create_op(input_file=source, metadata={"team": "search"}).execute(context(ti))

    assert openai_conn.counters["files_uploaded"] == 1
    (uploaded,) = batch_files(openai_conn)
    assert uploaded["filename"] == "requests.jsonl"
    assert uploaded["bytes"] == path.stat().st_size
    created = openai_conn.get_batch(batch_id)
    assert created["input_file_id"] == uploaded["id"]
    assert created["metadata"]["team"] == "search"
    assert ti.xcoms["batch_id"] == batch_id
    done = wait_for_status(openai_conn, batch_id, "completed")
    assert done["request_counts"]["total"] == 5


def test_invalid_input_is_rejected_before_anything_is_uploaded(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(invalid_jsonl(3))

    with pytest.raises(BatchInputError) as info:
        create_op(input_file=str(path)).execute(context())

    assert "line 2" in str(info.value)
    assert [problem.line for problem in info.value.problems] == [2]
    counters = openai_conn.counters
    assert counters["files_uploaded"] == 0
    assert counters["POST /v1/files"] == 0
    assert counters["POST /v1/batches"] == 0


def test_broken_json_line_is_named(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl(2) + b"{not json\n" + jsonl(1).replace(b"req-0", b"req-9"))

    with pytest.raises(BatchInputError, match="line 3"):
        create_op(input_file=path).execute(context())
    assert openai_conn.counters["requests"] == 0


def test_missing_input_file(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        create_op(input_file=tmp_path / "nope.jsonl").execute(context())
    assert openai_conn.counters["requests"] == 0


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({f"k{i}": "v" for i in range(16)}, "16 pairs"),
        ({"note": "x" * 513}, "513 chars"),
        ({"n": 3}, "must be a string"),
        ({"k" * 65: "v"}, "65 chars"),
    ],
)
def test_metadata_over_limits_is_rejected_before_upload(
    openai_conn: EmulatorServer, tmp_path: Path, metadata: dict[str, Any], match: str
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    with pytest.raises(ValueError, match=match):
        create_op(input_file=path, metadata=metadata).execute(context())
    assert openai_conn.counters["requests"] == 0


def test_fifteen_metadata_pairs_leave_room_for_the_idempotency_key(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    metadata = {f"k{i}": "v" for i in range(15)}
    batch_id = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 2), metadata=metadata).execute(context())
    assert len(openai_conn.get_batch(batch_id)["metadata"]) == 16


def test_exactly_one_input_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        OpenAIBatchCreateOperator(task_id="t", endpoint=ENDPOINT)
    with pytest.raises(ValueError, match="exactly one"):
        OpenAIBatchCreateOperator(task_id="t", endpoint=ENDPOINT, input_file_id="file-1", input_file="x.jsonl")


def test_endpoint_must_be_a_path(openai_conn: EmulatorServer) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        create_op(input_file_id="file-1", endpoint="chat/completions").execute(context())
    assert openai_conn.counters["requests"] == 0


# -- server rejection ------------------------------------------------------------------------------------


def test_rejected_create_deletes_the_uploaded_input(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 3)

    with pytest.raises(BadRequestError) as info:
        create_op(input_file=path, completion_window="48h").execute(context())

    assert info.value.status_code == 400
    assert "completion_window" in str(info.value) and "48h" in str(info.value)
    assert openai_conn.counters["files_uploaded"] == 1
    assert openai_conn.counters["DELETE /v1/files/{id}"] == 1
    assert batch_files(openai_conn) == []
    assert openai_conn.batches == {}


def test_rejected_create_keeps_the_input_when_asked(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 3)
    with pytest.raises(BadRequestError):
        create_op(input_file=path, completion_window="48h", delete_input_on_failure=False).execute(context())
    assert len(batch_files(openai_conn)) == 1


# -- XCom order and waiting -----------------------------------------------------------------------------------


def test_batch_id_is_pushed_before_deferring(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    ti = FakeTI()
    op = create_op(
        input_file=write_jsonl(tmp_path / "in.jsonl", 4),
        metadata={"emulator": "hold"},
        wait_for_completion=True,
        deferrable=True,
        wait_timeout=timedelta(hours=2),
    )

    with pytest.raises(TaskDeferred) as info:
        op.execute(context(ti))

    (batch_id,) = openai_conn.batches
    assert [key for key, _ in ti.pushes] == ["estimate", "batch_id"]  # the id is there when the task defers
    assert ti.xcoms["batch_id"] == batch_id
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(hours=2)
    trigger = deferred.trigger
    assert isinstance(trigger, OpenAIBatchTrigger)
    assert (trigger.batch_id, trigger.conn_id, trigger.cancel_on_kill) == (batch_id, "openai_default", True)


def test_wait_for_completion_deferrable_end_to_end(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    ti = FakeTI()
    op = create_op(
        input_file=write_jsonl(tmp_path / "in.jsonl", 4, failing=1), wait_for_completion=True, deferrable=True
    )

    with pytest.raises(TaskDeferred) as info:
        op.execute(context(ti))
    (event,) = run_trigger(info.value.trigger)  # type: ignore[arg-type]
    resumed = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 4, failing=1), wait_for_completion=True)
    result = resumed.execute_complete(context(ti), event)

    (batch_id,) = openai_conn.batches
    assert result == batch_id
    done = openai_conn.get_batch(batch_id)
    assert ti.xcoms["output_file_id"] == done["output_file_id"] is not None
    assert ti.xcoms["error_file_id"] == done["error_file_id"] is not None
    assert ti.xcoms["batch"]["request_counts"] == {"total": 4, "completed": 3, "failed": 1}


def test_wait_for_completion_in_the_worker(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    ti = FakeTI()
    op = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 4), wait_for_completion=True, deferrable=False)

    batch_id = op.execute(context(ti))

    assert openai_conn.get_batch(batch_id)["status"] == "completed"
    assert [key for key, _ in ti.pushes] == ["estimate", "batch_id", "output_file_id", "error_file_id", "batch", "cost"]
    assert ti.xcoms["output_file_id"] == openai_conn.get_batch(batch_id)["output_file_id"]


def test_wait_for_completion_fails_a_batch_that_failed(openai_conn: EmulatorServer) -> None:
    file_id = upload(invalid_jsonl(3))  # the server finds the problem, not the client
    with pytest.raises(AirflowFailException, match="url_mismatch"):
        create_op(input_file_id=file_id, wait_for_completion=True).execute(context())


def test_wait_timeout_leaves_the_batch_running(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    op = create_op(
        input_file=write_jsonl(tmp_path / "in.jsonl", 2),
        metadata={"emulator": "hold"},
        wait_for_completion=True,
        wait_timeout=0.3,
    )
    with pytest.raises(AirflowException, match="Timed out") as info:
        op.execute(context())
    assert not isinstance(info.value, AirflowFailException)  # a timeout may be retried: the batch runs on
    (batch_id,) = openai_conn.batches
    assert openai_conn.get_batch(batch_id)["status"] == "in_progress"


# -- idempotency --------------------------------------------------------------------------------------------


def test_rerun_of_the_same_task_instance_reuses_the_batch(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 4)
    first = create_op(input_file=path).execute(context(FakeTI()))
    # A retry is a new process: a new operator instance, a new ti object, the same identity, the next try.
    second = create_op(input_file=path).execute(context(FakeTI(try_number=2)))

    assert first == second
    assert list(openai_conn.batches) == [first]
    assert openai_conn.counters["files_uploaded"] == 1
    assert openai_conn.counters["batches_created"] == 1


def test_rerun_with_an_uploaded_file_id_reuses_the_batch(openai_conn: EmulatorServer) -> None:
    file_id = upload(jsonl(2))
    first = create_op(input_file_id=file_id).execute(context(FakeTI()))
    second = create_op(input_file_id=file_id).execute(context(FakeTI(try_number=2)))
    assert first == second
    assert openai_conn.counters["batches_created"] == 1


def test_rerun_of_a_completed_batch_reuses_it(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    first = create_op(input_file=path).execute(context(FakeTI()))
    wait_for_status(openai_conn, first, "completed")
    assert create_op(input_file=path).execute(context(FakeTI(try_number=2))) == first
    assert openai_conn.counters["batches_created"] == 1


@pytest.mark.parametrize(
    "other",
    [
        FakeTI(map_index=1),
        FakeTI(run_id="run_2"),
        FakeTI(task_id="other_task"),
        FakeTI(dag_id="other_dag"),
    ],
)
def test_another_task_instance_gets_its_own_batch(openai_conn: EmulatorServer, tmp_path: Path, other: FakeTI) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 4)
    first = create_op(input_file=path).execute(context(FakeTI(map_index=-1)))
    second = create_op(input_file=path).execute(context(other))

    assert first != second
    assert openai_conn.counters["batches_created"] == 2


def test_changed_input_gets_a_new_batch(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 4)
    first = create_op(input_file=path).execute(context(FakeTI()))
    write_jsonl(path, 5)
    second = create_op(input_file=path).execute(context(FakeTI(try_number=2)))
    assert first != second


def test_earlier_failed_batch_is_not_reused(openai_conn: EmulatorServer) -> None:
    file_id = upload(invalid_jsonl(3))
    first = create_op(input_file_id=file_id).execute(context(FakeTI()))
    wait_for_status(openai_conn, first, "failed")

    second = create_op(input_file_id=file_id).execute(context(FakeTI(try_number=2)))

    assert second != first
    assert openai_conn.counters["batches_created"] == 2


def test_earlier_cancelled_batch_is_not_reused(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 4)
    first = create_op(input_file=path, metadata={"emulator": "hold"}).execute(context(FakeTI()))
    openai_conn.store.cancel_batch(first)
    wait_for_status(openai_conn, first, "cancelled")

    second = create_op(input_file=path, metadata={"emulator": "hold"}).execute(context(FakeTI(try_number=2)))

    assert second != first
    assert openai_conn.counters["files_uploaded"] == 2


# -- on_kill ---------------------------------------------------------------------------------------------------


def test_on_kill_cancels_the_created_batch(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    op = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 4), metadata={"emulator": "hold"})
    batch_id = op.execute(context())

    op.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 1
    assert wait_for_status(openai_conn, batch_id, "cancelled")["status"] == "cancelled"


def test_on_kill_leaves_the_batch_when_asked(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    op = create_op(
        input_file=write_jsonl(tmp_path / "in.jsonl", 4), metadata={"emulator": "hold"}, cancel_on_kill=False
    )
    batch_id = op.execute(context())

    op.on_kill()

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 0
    assert openai_conn.get_batch(batch_id)["status"] in ("validating", "in_progress")


def test_on_kill_logs_a_failed_cancel_instead_of_raising(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    op = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 4), metadata={"emulator": "hold"})
    batch_id = op.execute(context())
    openai_conn.faults.add("POST /v1/batches/{id}/cancel", "status", status=404, times=None)

    op._cached_logger = log = Mock()  # type: ignore[assignment]

    op.on_kill()  # the task is being killed anyway: a failed cancel is reported, not raised

    assert openai_conn.counters["POST /v1/batches/{id}/cancel"] == 1
    assert log.warning.call_count == 1 and batch_id in log.warning.call_args.args


def test_on_kill_before_any_batch_does_nothing(openai_conn: EmulatorServer) -> None:
    create_op(input_file_id="file-1").on_kill()
    assert openai_conn.counters["requests"] == 0


def test_xcom_values_are_json(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    ti = FakeTI()
    batch_id = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 2), wait_for_completion=True).execute(
        context(ti)
    )
    assert [key for key, _ in ti.pushes] == [
        "estimate", "batch_id", "output_file_id", "error_file_id", "batch", "cost",
    ]  # fmt: skip
    for _key, value in ti.pushes:
        json.dumps(value)
    done = openai_conn.get_batch(batch_id)
    assert ti.xcoms["batch_id"] == batch_id
    assert ti.xcoms["output_file_id"] == done["output_file_id"] is not None
    # The batch XCom's keys are a contract: downstream tasks pull them by name.
    batch = ti.xcoms["batch"]
    assert {"id", "status", "output_file_id", "error_file_id", "endpoint", "model", "request_counts", "usage"} <= set(
        batch
    )
    assert (batch["id"], batch["status"], batch["endpoint"]) == (batch_id, "completed", ENDPOINT)
    assert (batch["output_file_id"], batch["error_file_id"]) == (done["output_file_id"], done["error_file_id"])
    assert batch["model"] == done["model"]
    assert batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
