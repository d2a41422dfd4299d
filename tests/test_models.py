"""Models of the Batch and Files API objects: tolerant parsing, round trips and the status table."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_openai_batch.models import (
    Batch,
    BatchError,
    BatchErrors,
    BatchPage,
    BatchStatus,
    DeletedFile,
    FileObject,
    RequestCounts,
    Usage,
)

#: A completed batch as in OpenAI's API reference (every key present, with usage and metadata).
FULL_BATCH: dict[str, Any] = {
    "id": "batch_abc123",
    "object": "batch",
    "endpoint": "/v1/completions",
    "model": "gpt-5-2025-08-07",
    "errors": None,
    "input_file_id": "file-abc123",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": "file-cvaTdG",
    "error_file_id": "file-HOWS94",
    "created_at": 1711471533,
    "in_progress_at": 1711471538,
    "expires_at": 1711557933,
    "finalizing_at": 1711493133,
    "completed_at": 1711493163,
    "failed_at": None,
    "expired_at": None,
    "cancelling_at": None,
    "cancelled_at": None,
    "request_counts": {"total": 100, "completed": 95, "failed": 5},
    "usage": {
        "input_tokens": 1500,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 500,
        "output_tokens_details": {"reasoning_tokens": 300},
        "total_tokens": 2000,
    },
    "metadata": {"customer_id": "user_123456789", "batch_description": "Nightly eval job"},
}

#: A failed batch with validation errors.
FAILED_BATCH: dict[str, Any] = {
    **FULL_BATCH,
    "id": "batch_failed",
    "status": "failed",
    "output_file_id": None,
    "error_file_id": None,
    "finalizing_at": None,
    "completed_at": None,
    "failed_at": 1711471540,
    "request_counts": {"total": 0, "completed": 0, "failed": 0},
    "usage": None,
    "errors": {
        "object": "list",
        "data": [
            {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": None,
             "line": 2},
            {"code": "duplicate_custom_id", "message": "The custom_id is not unique.", "param": "custom_id",
             "line": 7},
        ],
    },
}  # fmt: skip

#: An Azure documentation example: capitalised status, ISO timestamps, "" file ids, null request counts.
AZURE_BATCH: dict[str, Any] = {
    "cancelled_at": None,
    "cancelling_at": None,
    "completed_at": None,
    "completion_window": "24h",
    "created_at": "2024-07-19T17:13:57.2491382+00:00",
    "error_file_id": "",
    "errors": None,
    "expired_at": None,
    "expires_at": "2024-07-20T17:13:57.1918498+00:00",
    "failed_at": None,
    "finalizing_at": None,
    "id": "batch_fe3f047a-de39-4068-9008-346795bfc1db",
    "in_progress_at": None,
    "input_file_id": "file-21006e70789246658b86a1fc205899a4",
    "metadata": None,
    "object": "batch",
    "output_file_id": "",
    "request_counts": None,
    "status": "Validating",
}


class TestBatch:
    def test_full_batch(self) -> None:
        batch = Batch.from_dict(FULL_BATCH)
        assert batch.id == "batch_abc123"
        assert batch.status is BatchStatus.COMPLETED
        assert (batch.endpoint, batch.model, batch.completion_window) == ("/v1/completions", "gpt-5-2025-08-07", "24h")
        assert (batch.input_file_id, batch.output_file_id, batch.error_file_id) == (
            "file-abc123", "file-cvaTdG", "file-HOWS94",
        )  # fmt: skip
        assert batch.created_at == 1711471533
        assert batch.completed_at == batch.finished_at == 1711493163
        assert batch.request_counts == RequestCounts(total=100, completed=95, failed=5)
        assert batch.request_counts.processed == 100
        assert batch.request_counts.percent_done == 100.0
        assert batch.usage == Usage(
            input_tokens=1500, cached_tokens=1024, output_tokens=500, reasoning_tokens=300, total_tokens=2000
        )
        assert batch.metadata == {"customer_id": "user_123456789", "batch_description": "Nightly eval job"}
        assert batch.errors is None
        assert batch.extra == {}

    @pytest.mark.parametrize("payload", [FULL_BATCH, FAILED_BATCH], ids=["completed", "failed"])
    def test_to_dict_reproduces_the_api_object(self, payload: dict[str, Any]) -> None:
        batch = Batch.from_dict(payload)
        assert batch.to_dict() == payload
        assert Batch.from_dict(batch.to_dict()) == batch
        assert json.loads(json.dumps(batch.to_dict())) == payload  # plain JSON: XCom and trigger events

    def test_failed_batch_errors(self) -> None:
        batch = Batch.from_dict(FAILED_BATCH)
        assert batch.status is BatchStatus.FAILED
        assert batch.errors is not None
        assert batch.errors.data[0] == BatchError(
            code="invalid_json_line", message="This line is not parseable as valid JSON.", param=None, line=2
        )
        assert str(batch.errors.data[1]) == "line 7: [duplicate_custom_id] The custom_id is not unique."
        summary = batch.errors.summary()
        assert summary.splitlines() == [
            "  - line 2: [invalid_json_line] This line is not parseable as valid JSON.",
            "  - line 7: [duplicate_custom_id] The custom_id is not unique.",
        ]
        assert batch.errors.summary(limit=1).splitlines()[-1] == "  ... and 1 more"
        assert batch.summary()["errors"][1]["code"] == "duplicate_custom_id"
        assert batch.finished_at == 1711471540

    def test_explicit_nulls_everywhere(self) -> None:
        payload = {key: None for key in FULL_BATCH}
        payload.update(id="batch_1", status="in_progress")
        batch = Batch.from_dict(payload)
        assert batch.status is BatchStatus.IN_PROGRESS
        assert batch.object == "batch"
        assert batch.request_counts == RequestCounts()
        assert batch.usage is None and batch.metadata is None and batch.errors is None
        assert batch.created_at is None and batch.finished_at is None
        assert Batch.from_dict(batch.to_dict()) == batch

    def test_only_id_and_status(self) -> None:
        batch = Batch.from_dict({"id": "batch_1", "status": "validating"})
        assert batch.endpoint is None
        assert batch.request_counts.total == 0
        assert batch.request_counts.percent_done == 0.0
        out = batch.to_dict()
        assert set(out) >= set(FULL_BATCH)  # every key is written back, null when unknown
        assert out["output_file_id"] is None

    def test_unknown_keys_are_kept_and_round_tripped(self) -> None:
        payload = {**FULL_BATCH, "priority": "flex", "new_object": {"nested": [1, 2]}}
        batch = Batch.from_dict(payload)
        assert batch.extra == {"priority": "flex", "new_object": {"nested": [1, 2]}}
        assert batch.to_dict() == payload
        again = Batch.from_dict(batch.to_dict())
        assert again.extra == batch.extra
        assert "priority" not in batch.summary()

    def test_azure_quirks(self) -> None:
        batch = Batch.from_dict(AZURE_BATCH)
        assert batch.status is BatchStatus.VALIDATING
        assert batch.output_file_id is None
        assert batch.error_file_id is None
        assert batch.request_counts == RequestCounts(0, 0, 0)
        assert batch.created_at == 1721409237
        assert batch.expires_at == 1721495637
        assert batch.endpoint is None and batch.model is None
        assert batch.to_dict()["status"] == "validating"
        assert Batch.from_dict(batch.to_dict()) == batch

    @pytest.fixture
    def non_utc_local_time(self) -> Iterator[None]:
        previous = os.environ.get("TZ")
        os.environ["TZ"] = "America/New_York"
        time.tzset()
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = previous
            time.tzset()

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1711471533, 1711471533),
            (1711471533.9, 1711471533),
            ("1711471533", 1711471533),
            ("2024-07-19T17:13:57Z", 1721409237),
            ("2024-07-19T17:13:57.2491382+00:00", 1721409237),
            ("2024-07-19T19:13:57+02:00", 1721409237),
            ("2024-07-19T17:13:57", 1721409237),  # no offset: UTC, whatever the local time zone
            ("2024-07-19T17:13:57.123", 1721409237),
            ("", None),
            ("yesterday", None),
            (True, None),
            ([1], None),
        ],
    )
    def test_timestamps(self, non_utc_local_time: None, value: Any, expected: int | None) -> None:
        assert Batch.from_dict({"id": "batch_1", "status": "completed", "completed_at": value}).completed_at == expected

    def test_counts_as_strings_and_garbage(self) -> None:
        counts = RequestCounts.from_dict({"total": "10", "completed": None, "failed": "x"})
        assert counts == RequestCounts(total=10, completed=0, failed=0)
        assert RequestCounts.from_dict("nonsense") == RequestCounts()

    @pytest.mark.parametrize(
        "payload",
        [{}, {"status": "completed"}, {"id": "", "status": "completed"}, {"id": "batch_1"},
         {"id": "batch_1", "status": None}],
    )  # fmt: skip
    def test_missing_id_or_status(self, payload: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            Batch.from_dict(payload)

    def test_unknown_status_parses_and_round_trips(self) -> None:
        batch = Batch.from_dict({"id": "batch_1", "status": "Paused"})
        assert batch.status.value == "paused" and not batch.status.is_known
        assert batch.to_dict()["status"] == "paused"
        assert Batch.from_dict(batch.to_dict()).status == batch.status

    def test_errors_as_bare_list(self) -> None:
        errors = BatchErrors.from_dict([{"code": "x", "message": "m", "line": "3"}])
        assert errors is not None and errors.data == (BatchError(code="x", message="m", line=3),)
        assert BatchErrors.from_dict(None) is None
        assert BatchErrors.from_dict({"object": "list", "data": None}) == BatchErrors()
        assert str(BatchError()) == "no message"

    def test_metadata_values_become_strings_and_models_are_immutable(self) -> None:
        batch = Batch.from_dict({"id": "batch_1", "status": "completed", "metadata": {"n": 1}})
        assert batch.metadata == {"n": "1"}
        with pytest.raises(AttributeError):
            batch.status = BatchStatus.FAILED  # type: ignore[misc]

    def test_input_is_not_modified(self) -> None:
        payload = copy.deepcopy(FULL_BATCH)
        Batch.from_dict(payload).to_dict()["metadata"]["x"] = "y"
        assert payload == FULL_BATCH

    def test_summary(self) -> None:
        summary = Batch.from_dict(FULL_BATCH).summary()
        assert summary["id"] == "batch_abc123"
        assert summary["status"] == "completed"
        assert summary["request_counts"] == {"total": 100, "completed": 95, "failed": 5}
        assert summary["errors"] == []
        assert "input_file_id" not in summary
        json.dumps(summary)


# (is_terminal, is_success, may_have_partial_output, is_cancellable)
STATUS_TABLE = {
    "validating": (False, False, False, True),
    "in_progress": (False, False, False, True),
    "finalizing": (False, False, False, True),
    "cancelling": (False, False, False, False),
    "completed": (True, True, False, False),
    "failed": (True, False, False, False),
    "expired": (True, False, True, False),
    "cancelled": (True, False, True, False),
}


def test_status_table_covers_every_status() -> None:
    assert set(STATUS_TABLE) == {status.value for status in BatchStatus}


@pytest.mark.parametrize(("value", "expected"), sorted(STATUS_TABLE.items()))
def test_status_table(value: str, expected: tuple[bool, bool, bool, bool]) -> None:
    status = BatchStatus.parse(value)
    assert status.value == value
    assert (status.is_terminal, status.is_success, status.may_have_partial_output, status.is_cancellable) == expected


@pytest.mark.parametrize("value", ["Validating", "IN_PROGRESS", " completed ", "Cancelling"])
def test_status_parse_tolerates_case_and_spaces(value: str) -> None:
    assert BatchStatus.parse(value).value == value.strip().lower()


@pytest.mark.parametrize("value", ["paused", "", "cancel", 3, "queued_at_gateway"])
def test_unknown_status_is_not_terminal_and_keeps_its_text(value: Any) -> None:
    # The API adds statuses and gateways invent their own: waiting on through one is safe, failing is not.
    status = BatchStatus.parse(value)
    assert status.value == str(value).strip().lower()
    assert (status.is_known, status.is_terminal, status.is_success, status.may_have_partial_output) == (
        False,
        False,
        False,
        False,
    )
    assert status not in set(BatchStatus)


def test_known_statuses_are_known() -> None:
    assert all(status.is_known for status in BatchStatus)


class TestBatchPage:
    def test_with_has_more(self) -> None:
        payload = {
            "object": "list",
            "data": [FULL_BATCH, FAILED_BATCH],
            "first_id": "batch_abc123",
            "last_id": "batch_failed",
            "has_more": True,
        }
        page = BatchPage.from_dict(payload)
        assert [b.id for b in page.data] == ["batch_abc123", "batch_failed"]
        assert page.has_more is True
        assert (page.first_id, page.last_id) == ("batch_abc123", "batch_failed")
        assert page.to_dict() == payload
        assert BatchPage.from_dict(page.to_dict()) == page

    def test_has_more_false(self) -> None:
        page = BatchPage.from_dict({"object": "list", "data": [FULL_BATCH], "has_more": False})
        assert page.has_more is False
        assert page.first_id == page.last_id == "batch_abc123"

    def test_without_has_more(self) -> None:
        assert BatchPage.from_dict({"object": "list", "data": [FULL_BATCH]}).has_more is True  # keep paging
        empty = BatchPage.from_dict({"object": "list", "data": []})
        assert empty.has_more is False
        assert empty.data == ()
        assert (empty.first_id, empty.last_id) == (None, None)

    def test_empty_page_with_null_ids(self) -> None:
        page = BatchPage.from_dict({"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False})
        assert page.to_dict() == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}

    def test_garbage_data(self) -> None:
        assert BatchPage.from_dict({"data": None}).data == ()


class TestFiles:
    FILE = {
        "id": "file-abc123",
        "object": "file",
        "bytes": 120000,
        "created_at": 1677610602,
        "expires_at": 1680202602,
        "filename": "salesOverview.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }

    def test_file_round_trip(self) -> None:
        file = FileObject.from_dict(self.FILE)
        assert (file.id, file.bytes, file.filename, file.purpose) == (
            "file-abc123", 120000, "salesOverview.jsonl", "batch",
        )  # fmt: skip
        assert file.to_dict() == self.FILE
        assert FileObject.from_dict(file.to_dict()) == file

    def test_minimal_file_and_missing_id(self) -> None:
        file = FileObject.from_dict({"id": "file-1", "bytes": None, "created_at": "2024-07-19T17:13:57Z"})
        assert file.bytes is None
        assert file.created_at == 1721409237
        assert file.object == "file"
        with pytest.raises(ValueError, match="no 'id'"):
            FileObject.from_dict({"object": "file"})

    def test_deleted_file(self) -> None:
        assert DeletedFile.from_dict({"id": "file-1", "object": "file", "deleted": True}) == DeletedFile("file-1", True)
        assert DeletedFile.from_dict({}) == DeletedFile("", False)


def test_usage() -> None:
    assert Usage.from_dict(None) is None
    assert Usage.from_dict("x") is None
    usage = Usage.from_dict({"input_tokens": 5, "output_tokens": 7, "total_tokens": 12})
    assert usage == Usage(input_tokens=5, output_tokens=7, total_tokens=12)
    assert usage is not None and usage.to_dict()["input_tokens_details"] == {"cached_tokens": 0}


# -- Contracts and boundaries the mutation run (make mutate) showed unpinned ---------------------------------------


def test_summary_is_the_batch_xcom_contract() -> None:
    # Downstream tasks pull these keys from the ``batch`` XCom: renaming or dropping one breaks their DAGs.
    assert Batch.from_dict(FULL_BATCH).summary() == {
        "id": "batch_abc123",
        "status": "completed",
        "endpoint": "/v1/completions",
        "model": FULL_BATCH.get("model"),
        "output_file_id": FULL_BATCH["output_file_id"],
        "error_file_id": FULL_BATCH["error_file_id"],
        "request_counts": {"total": 100, "completed": 95, "failed": 5},
        "usage": Batch.from_dict(FULL_BATCH).usage.to_dict(),  # type: ignore[union-attr]
        "errors": [],
        **{name: FULL_BATCH.get(name) for name in Batch._TIMESTAMPS},
    }
    assert set(Batch.from_dict({"id": "b", "status": "validating"}).summary()) >= {
        "id", "status", "endpoint", "model", "output_file_id", "error_file_id", "request_counts", "usage", "errors",
    }  # fmt: skip


def test_summary_usage_values() -> None:
    summary = Batch.from_dict(FULL_BATCH).summary()
    assert summary["usage"]["input_tokens"] == FULL_BATCH["usage"]["input_tokens"]
    assert Batch.from_dict({"id": "b", "status": "completed"}).summary()["usage"] is None


@pytest.mark.parametrize(
    "model",
    [
        RequestCounts(),
        Usage(),
        BatchError(code="x", message="y"),
        BatchErrors(),
        Batch(id="b", status=BatchStatus.COMPLETED),
        BatchPage(data=()),
        FileObject(id="f"),
        DeletedFile("f", True),
    ],
    ids=lambda m: type(m).__name__,
)
def test_models_are_immutable(model: Any) -> None:
    # Models are shared between the trigger, the operator and XCom: nobody may change one in place.
    field = next(iter(model.__dataclass_fields__))
    with pytest.raises(AttributeError):
        setattr(model, field, getattr(model, field))


def test_usage_without_figures_is_all_zeros() -> None:
    assert Usage().to_dict() == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


@pytest.mark.parametrize(("count", "more"), [(10, None), (11, "  ... and 1 more"), (12, "  ... and 2 more")])
def test_error_summary_shows_ten_then_counts_the_rest(count: int, more: str | None) -> None:
    errors = BatchErrors(data=tuple(BatchError(code=f"c{i}", message="m", line=i) for i in range(count)))
    lines = errors.summary().splitlines()
    assert len(lines) == min(count, 10) + (1 if more else 0)
    assert lines[-1] == more if more else "line 9" in lines[-1]


def test_object_defaults_and_what_the_server_says_are_kept() -> None:
    assert Batch(id="b", status=BatchStatus.COMPLETED).object == "batch"
    assert Batch.from_dict({"id": "b", "status": "completed"}).object == "batch"
    assert Batch.from_dict({"id": "b", "status": "completed", "object": "batch.v2"}).object == "batch.v2"
    assert FileObject(id="f").object == "file"
    assert FileObject.from_dict({"id": "f"}).object == "file"
    assert FileObject.from_dict({"id": "f", "object": "file.v2"}).object == "file.v2"


def test_file_status_details_are_kept() -> None:
    file = FileObject.from_dict({"id": "f", "status": "error", "status_details": "invalid_jsonl"})
    assert file.status_details == "invalid_jsonl"


def test_extra_keys_are_neither_shown_nor_compared() -> None:
    plain = Batch.from_dict({"id": "b", "status": "completed"})
    extra = Batch.from_dict({"id": "b", "status": "completed", "vendor_field": "do-not-show"})
    assert extra.extra == {"vendor_field": "do-not-show"}
    assert extra == plain
    assert "do-not-show" not in repr(extra)


@pytest.mark.parametrize("field", ["completed_at", "failed_at", "expired_at", "cancelled_at"])
def test_finished_at_is_whichever_terminal_time_is_set(field: str) -> None:
    batch = Batch.from_dict({"id": "b", "status": "completed", field: 1_700_000_000})
    assert batch.finished_at == 1_700_000_000
    assert Batch.from_dict({"id": "b", "status": "in_progress"}).finished_at is None


def test_page_ids_default_to_its_first_and_last_batch() -> None:
    page = BatchPage.from_dict({"data": [FULL_BATCH, FAILED_BATCH, {"id": "batch_3", "status": "failed"}]})
    assert (page.first_id, page.last_id) == ("batch_abc123", "batch_3")
    assert BatchPage(data=()).has_more is False
    given = BatchPage.from_dict({"data": [FULL_BATCH], "first_id": "a", "last_id": "z", "has_more": True})
    assert (given.first_id, given.last_id) == ("a", "z")


def test_non_string_ids_become_strings() -> None:
    batch = Batch.from_dict({"id": "b", "status": "completed", "output_file_id": 123, "error_file_id": ""})
    assert (batch.output_file_id, batch.error_file_id) == ("123", None)


@pytest.mark.parametrize("cls", [Batch, FileObject])
def test_not_an_object_error_quotes_at_most_200_characters(cls: Any) -> None:
    data = {"object": "x" * 500}
    with pytest.raises(ValueError, match="no 'id'") as info:
        cls.from_dict(data)
    assert str(data)[:200] in str(info.value)
    assert str(data)[:201] not in str(info.value)


def test_unknown_status_is_a_member_named_unknown() -> None:
    status = BatchStatus.parse("brand_new_status")
    assert (status.name, status.value, status.is_known) == ("UNKNOWN", "brand_new_status", False)
    assert BatchStatus.COMPLETED.is_known
