"""Idempotent create that holds in production (#11 items 1-4), against the emulator.

A retry is modelled as Airflow makes it: a new operator and task instance with the same identity and the next
try number, in a DAG run whose ``run_after`` bounds how far back an earlier try can have created a batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY, OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch import OpenAIBatchCreateOperator
from tests._kit.batches import wait_for_status, write_jsonl
from tests._kit.connection import set_connection
from tests._kit.operators import job_op
from tests._kit.ti import FakeTI

ENDPOINT = "/v1/chat/completions"
LIST = "GET /v1/batches"
DAY = 86_400.0


class ShiftedClock:
    """Real time plus an offset the test moves forward: batches can be made "two days ago"."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def emu(clock: ShiftedClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(phase_seconds=0.05, clock=clock) as server:
        set_connection(monkeypatch, server.base_url)
        yield server


def create_op(**kwargs: Any) -> OpenAIBatchCreateOperator:
    kwargs.setdefault("endpoint", ENDPOINT)
    return OpenAIBatchCreateOperator(task_id="create", **kwargs)


def ctx(try_number: int, *, run_after: datetime | None = None, map_index: int = -1) -> dict[str, Any]:
    """A task context: the try, and a DAG run that became runnable ``run_after`` (default: 5 minutes ago)."""
    run_after = run_after or datetime.now(timezone.utc) - timedelta(minutes=5)
    return {
        "ti": FakeTI(map_index=map_index, try_number=try_number),
        "dag_run": SimpleNamespace(run_after=run_after, start_date=run_after, queued_at=None),
    }


def upload(text: bytes) -> str:
    import io

    return OpenAIBatchHook().upload_file(io.BytesIO(text), filename="in.jsonl").id


# -- item 2: a first try does not look --------------------------------------------------------------------------


def test_a_first_try_makes_no_list_call(emu: EmulatorServer, tmp_path: Path) -> None:
    create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 2)).execute(ctx(1))
    file_id = upload(write_jsonl(tmp_path / "other.jsonl", 3).read_bytes())
    create_op(input_file_id=file_id).execute(ctx(1))

    assert emu.counters[LIST] == 0
    assert emu.counters["batches_created"] == 2


@pytest.mark.parametrize("try_number", [2, 5])
def test_a_later_try_looks_and_reuses(emu: EmulatorServer, tmp_path: Path, try_number: int) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    first = create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(1))
    assert create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(try_number)) == first
    assert emu.counters[LIST] == 1
    assert (emu.counters["files_uploaded"], emu.counters["batches_created"]) == (1, 1)


# -- item 1: the look-back is bounded by time, not by count ------------------------------------------------------


def test_a_retry_finds_its_batch_behind_more_than_1000_newer_ones(emu: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    first = create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(1))
    emu.seed_batches(1_100)  # a large mapped task creating batches in the same project between the two tries

    second = create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(2))

    assert second == first
    assert emu.counters["batches_created"] == 1
    assert emu.counters[LIST] == 12  # 1,101 newest batches: 12 pages of 100


def test_the_look_back_stops_at_the_dag_run(emu: EmulatorServer, clock: ShiftedClock, tmp_path: Path) -> None:
    clock.offset = -2 * DAY
    emu.seed_batches(3_000)  # older than this DAG run: never read
    clock.offset = 0.0
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    first = create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(1))
    emu.seed_batches(250)

    emu.reset_counters()
    assert create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(2)) == first
    found = emu.counters[LIST]
    # A retry of a task instance that created nothing reads back to its DAG run (less the skew allowance) only.
    emu.reset_counters()
    create_op(input_file=path, metadata={"emulator": "hold"}).execute(ctx(2, map_index=7))
    not_found = emu.counters[LIST]

    assert found == 3  # the batch is the 251st newest
    assert not_found == 3  # 251 batches in the window, then the first page reaching the 2-day-old ones
    print(f"\nlist calls per create: first try 0, retry found {found}, retry not found {not_found}")


# -- item 3: only a batch that can still give results is reused ---------------------------------------------------


def test_a_completed_batch_whose_requests_all_failed_is_not_reused(emu: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 3, failing=3)
    first = create_op(input_file=path).execute(ctx(1))
    done = wait_for_status(emu, first, "completed")
    assert done["request_counts"]["completed"] == 0

    second = create_op(input_file=path).execute(ctx(2))

    assert second != first
    assert emu.counters["batches_created"] == 2


def test_a_completed_batch_with_its_output_file_gone_is_not_reused(emu: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    first = create_op(input_file=path).execute(ctx(1))
    output_file_id = wait_for_status(emu, first, "completed")["output_file_id"]
    OpenAIBatchHook().delete_file(output_file_id)

    second = create_op(input_file=path).execute(ctx(2))

    assert second != first
    assert emu.counters["batches_created"] == 2


def test_a_completed_batch_with_an_expired_output_file_is_not_reused(
    emu: EmulatorServer, clock: ShiftedClock, tmp_path: Path
) -> None:
    clock.offset = -2 * 3600.0  # made two hours ago, its output kept for one hour
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    first = create_op(input_file=path, output_expires_after=3600).execute(ctx(1))
    wait_for_status(emu, first, "completed")

    run_after = datetime.now(timezone.utc) - timedelta(hours=3)
    second = create_op(input_file=path, output_expires_after=3600).execute(ctx(2, run_after=run_after))

    assert second != first
    assert emu.counters["batches_created"] == 2


def test_a_completed_batch_with_results_is_reused(emu: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 3, failing=1)
    first = create_op(input_file=path).execute(ctx(1))
    wait_for_status(emu, first, "completed")
    assert create_op(input_file=path).execute(ctx(2)) == first
    assert emu.counters["batches_created"] == 1


# -- item 4: the reserved tag key ---------------------------------------------------------------------------------


def test_user_metadata_under_the_reserved_key_is_rejected_before_upload(emu: EmulatorServer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", 2)
    with pytest.raises(ValueError, match=f"{IDEMPOTENCY_METADATA_KEY}.*reserved"):
        create_op(input_file=path, metadata={IDEMPOTENCY_METADATA_KEY: "mine"}).execute(ctx(1))
    with pytest.raises(ValueError, match="reserved"):
        OpenAIBatchHook().create_batch(
            input_file_id="file-1", endpoint=ENDPOINT, metadata={IDEMPOTENCY_METADATA_KEY: "mine"}
        )
    assert emu.counters["requests"] == 0


# -- #12 item 5: output_expires_after as a template renders it --------------------------------------------------


@pytest.mark.parametrize(
    ("template", "seconds"),
    [("{{ 2 * 3600 }}", 7_200), ('{"anchor": "created_at", "seconds": {{ 3 * 3600 }}}', 10_800)],
)
def test_a_templated_output_expires_after_is_accepted(
    emu: EmulatorServer, tmp_path: Path, template: str, seconds: int
) -> None:
    op = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 2), output_expires_after=template)
    context = ctx(1)
    op.render_template_fields(context)  # type: ignore[arg-type]
    assert isinstance(op.output_expires_after, str)  # Jinja renders strings

    batch_id = op.execute(context)

    output = OpenAIBatchHook().retrieve_file(wait_for_status(emu, batch_id, "completed")["output_file_id"])
    assert output.expires_at is not None and output.created_at is not None
    assert output.expires_at - output.created_at == seconds


def test_a_templated_output_expires_after_of_the_wrong_shape_fails_before_upload(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    op = create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 2), output_expires_after="{{ 'an hour' }}")
    op.render_template_fields(ctx(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"output_expires_after.*'an hour'"):
        op.execute(ctx(1))
    assert emu.counters["requests"] == 0


def create_or_job(kind: str, tmp_path: Path, **kwargs: Any) -> Any:
    """The Create or the Job operator over two requests in ``tmp_path/in.jsonl``; both check create arguments."""
    source = write_jsonl(tmp_path / "in.jsonl", 2)
    (tmp_path / "out").mkdir(exist_ok=True)  # Airflow 3.1 renders a Path field by reading it: it must exist
    return create_op(input_file=source, **kwargs) if kind == "create" else job_op(tmp_path, **kwargs)


@pytest.mark.parametrize("kind", ["create", "job"])
@pytest.mark.parametrize(
    "template",
    [{"anchor": "created_at", "seconds": "{{ 24 * 3600 }}"}, '{"anchor": "created_at", "seconds": "{{ 24 * 3600 }}"}'],
    ids=["mapping", "json_string"],
)
def test_seconds_that_render_as_a_string_are_sent_as_an_integer(
    emu: EmulatorServer, tmp_path: Path, kind: str, template: Any
) -> None:
    op = create_or_job(kind, tmp_path, output_expires_after=template)
    context = ctx(1)
    op.render_template_fields(context)
    rendered = op.output_expires_after
    assert (json.loads(rendered) if isinstance(rendered, str) else rendered)["seconds"] == "86400"

    op.execute(context)  # the emulator, as the service, answers a string "seconds" with a 400

    (batch_id,) = emu.batches
    output = OpenAIBatchHook().retrieve_file(wait_for_status(emu, batch_id, "completed")["output_file_id"])
    assert output.expires_at is not None and output.created_at is not None
    assert output.expires_at - output.created_at == 86_400


@pytest.mark.parametrize("kind", ["create", "job"])
@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"anchor": "created_at", "seconds": "{{ 'a day' }}"}, "output_expires_after.seconds must be a positive "
         "integer, got 'a day'"),
        ({"anchor": "created_at", "seconds": "{{ 0 }}"}, "output_expires_after.seconds must be a positive integer, "
         "got 0"),
        ({"anchor": "created_at", "seconds": "{{ 1.5 * 3600 }}"}, "output_expires_after.seconds must be a positive "
         "integer, got '5400.0'"),
        ({"anchor": "{{ 'last_active_at' }}", "seconds": 3600}, "output_expires_after.anchor must be 'created_at', "
         "got 'last_active_at'"),
        ('{"anchor": "created_at", "seconds": {{ 3600 }}, "days": 1}', "output_expires_after must be seconds or"),
    ],
    ids=["words", "zero", "fraction", "anchor", "extra_key"],
)  # fmt: skip
def test_rendered_nonsense_names_the_field_before_upload(
    emu: EmulatorServer, tmp_path: Path, kind: str, template: Any, message: str
) -> None:
    op = create_or_job(kind, tmp_path, output_expires_after=template)
    context = ctx(1)
    op.render_template_fields(context)
    with pytest.raises(ValueError) as info:
        op.execute(context)
    assert str(info.value).startswith(message)
    assert emu.counters["requests"] == 0


# -- #12 item 9: the uploaded input expires -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "expires"),
    [({}, None, 14 * 86_400), ({}, 3 * 86_400, 3 * 86_400), ({"input_expires_after": 20 * 86_400}, None, 20 * 86_400),
     ({"input_expires_after": 0}, None, None), ({}, 0, None)],
)  # fmt: skip
def test_the_uploaded_input_carries_an_expiry(
    emu: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, Any],
    param: int | None,
    expires: int | None,
) -> None:
    set_connection(monkeypatch, emu.base_url, **extra)
    create_op(input_file=write_jsonl(tmp_path / "in.jsonl", 2), input_expires_after=param).execute(ctx(1))

    (uploaded,) = [f for f in emu.files.values() if f["purpose"] == "batch"]
    if expires is None:  # no expires_after sent: the service's own default for batch files applies
        assert emu.counters["files_uploaded"] == 1
        assert uploaded["expires_at"] - uploaded["created_at"] == 30 * 86_400
    else:
        assert uploaded["expires_at"] - uploaded["created_at"] == expires
