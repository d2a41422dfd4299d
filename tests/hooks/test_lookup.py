"""The look-up of an earlier batch (hooks/_lookup.py), and a full queue at create, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_openai_batch.exceptions import BadRequestError, CapacityError
from airflow_provider_openai_batch.hooks._lookup import CLOCK_SKEW, newest_tagged
from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY, OpenAIBatchHook
from tests._kit.http_server import LocalServer, batch_payload, file_payload, page_payload

TAG = {IDEMPOTENCY_METADATA_KEY: "k"}


def tagged(batch_id: str, status: str = "in_progress", created_at: int = 1_000_000, **extra: Any) -> dict[str, Any]:
    return batch_payload(batch_id, status=status, created_at=created_at, metadata=TAG, **extra)


def test_a_listed_batch_with_an_unknown_status_is_skipped(server: LocalServer, set_conn: Callable[..., None]) -> None:
    set_conn(host=server.url, max_retries=0)
    page = [
        tagged("batch_new", status="paused_by_gateway"),  # a status this version does not know
        batch_payload("batch_other", status="in_progress"),
        tagged("batch_old", status="in_progress"),
    ]
    server.route("GET", "/batches", lambda req: req.send_json(200, page_payload(page)))

    found = OpenAIBatchHook().find_batch_by_idempotency_key("k", not_before=0.0)

    assert found is not None and found.id == "batch_old"


def pages_of(created: list[int], read: list[int], tag_at: tuple[int, int] | None = None) -> Any:
    """Full pages (100 batches, one second apart) starting at each ``created``; records the pages read."""
    for number, newest in enumerate(created, start=1):
        read.append(number)
        page = [batch_payload(f"b{number}-{i}", created_at=newest - i) for i in range(100)]
        if tag_at is not None and tag_at[0] == number:
            page[tag_at[1]]["metadata"] = TAG
        yield page


def test_paging_stops_at_the_first_batch_older_than_the_bound() -> None:
    read: list[int] = []
    bound = 40_050 + CLOCK_SKEW  # falls inside page 2
    assert (
        newest_tagged(pages_of([50_000, 40_100, 30_000, 20_000], read), "k", not_before=bound, max_scanned=None) is None
    )
    assert read == [1, 2]
    read.clear()  # a page ending past the bound is the last one read
    bound = 45_050 + CLOCK_SKEW  # after the last batch of page 1 (45,001)
    assert newest_tagged(pages_of([45_100, 40_000, 30_000], read), "k", not_before=bound, max_scanned=None) is None
    assert read == [1]


def test_the_newest_page_is_read_whole_whatever_the_clocks_say() -> None:
    read: list[int] = []
    found = newest_tagged(pages_of([1_000, 900], read, tag_at=(1, 60)), "k", not_before=10**9, max_scanned=None)
    assert found is not None and found.id == "b1-60"
    assert read == [1]


def test_a_completed_batch_keeps_being_reused_while_its_output_exists(
    server: LocalServer, set_conn: Callable[..., None]
) -> None:
    set_conn(host=server.url, max_retries=0)
    done = tagged("batch_done", status="completed", output_file_id="file-out")
    server.route("GET", "/batches", lambda req: req.send_json(200, page_payload([done])))
    server.route("GET", "/files/file-out", lambda req: req.send_json(200, file_payload("file-out", expires_at=None)))

    found = OpenAIBatchHook().find_batch_by_idempotency_key("k", not_before=0.0)

    assert found is not None and found.id == "batch_done"


AZURE_FULL = {
    "error": {
        "code": "token_limit_exceeded",
        "message": "Enqueued token limit reached for gpt-4o-mini. Limit: 5,000,000 enqueued tokens.",
        "type": "invalid_request_error",
    }
}


@pytest.mark.parametrize(
    "body",
    [
        AZURE_FULL,
        {"error": {"code": None, "message": "Batch could not be created: enqueued token limit reached for the model."}},
    ],
)
def test_a_full_queue_at_create_is_a_retryable_capacity_error(
    server: LocalServer, set_conn: Callable[..., None], body: dict[str, Any]
) -> None:
    set_conn(host=server.url, max_retries=2, api_type="azure", api_version="2024-10-21")
    server.route("POST", "/batches", lambda req: (req.read_body(), req.send_json(400, body)))

    with pytest.raises(CapacityError) as info:
        OpenAIBatchHook().create_batch(input_file_id="file-1", endpoint="/v1/chat/completions")

    assert info.value.retryable is True
    assert "retry later" in str(info.value) and "fewer batches" in str(info.value)
    assert sum(method == "POST" for method, _, _ in server.requests) == 1  # a 400 is never resent within the call


def test_an_ordinary_400_stays_a_bad_request(server: LocalServer, set_conn: Callable[..., None]) -> None:
    set_conn(host=server.url, max_retries=2)
    body = {"error": {"code": "invalid_value", "message": "endpoint is not supported", "param": "endpoint"}}
    server.route("POST", "/batches", lambda req: (req.read_body(), req.send_json(400, body)))

    with pytest.raises(BadRequestError) as info:
        OpenAIBatchHook().create_batch(input_file_id="file-1", endpoint="/v1/chat/completions")

    assert not isinstance(info.value, CapacityError) and info.value.retryable is False
