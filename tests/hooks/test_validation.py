"""hooks/validation.py: id checks (any id a URL path segment can carry, percent-encoded; path tricks refused), and
``output_expires_after`` in every form a template renders it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.hooks.validation import (
    MAX_ID_LENGTH,
    check_id,
    create_batch_body,
    path_id,
    validate_metadata,
    validate_output_expires_after,
)
from tests._kit.http_server import LocalServer, batch_payload

#: Shaped like a LiteLLM managed-file id: ~340 characters of base64 with a prefix.
GATEWAY_ID = "litellm_proxy:" + ("bWFuYWdlZF9maWxlOnVuaWZpZWRfZmlsZV9pZD0" * 9) + "+x=="


def test_a_long_gateway_id_is_sent_percent_encoded(server: LocalServer, set_conn: Callable[..., None]) -> None:
    assert len(GATEWAY_ID) > 340
    set_conn(host=server.url, max_retries=0)
    seen: list[str] = []

    def answer(req: object) -> None:
        seen.append(req.path)  # type: ignore[attr-defined]
        req.send_json(200, batch_payload(GATEWAY_ID))  # type: ignore[attr-defined]

    server.route("GET", f"/batches/{path_id('batch_id', GATEWAY_ID)}", answer)
    assert OpenAIBatchHook().retrieve_batch(GATEWAY_ID).id == GATEWAY_ID
    assert seen == ["/v1/batches/" + GATEWAY_ID]  # every character of it is safe in a path segment


@pytest.mark.parametrize(
    ("value", "encoded"),
    [("batch_abc123", "batch_abc123"), ("a?b", "a%3Fb"), ("a#b", "a%23b"), ("50%off", "50%25off")],
)
def test_characters_that_end_a_path_segment_are_encoded(value: str, encoded: str) -> None:
    assert path_id("batch_id", value) == encoded


@pytest.mark.parametrize(
    ("value", "match"),
    [("", "non-empty"), (" batch_1", "whitespace"), ("batch_1\n", "whitespace"), ("a/b", "'/'"),
     ("..", "'..'"), (".", "'..'"), ("a\\b", "'/'"), ("x" * (MAX_ID_LENGTH + 1), "at most")],
)  # fmt: skip
def test_path_tricks_and_absurd_ids_are_refused_before_any_request(
    server: LocalServer, set_conn: Callable[..., None], value: str, match: str
) -> None:
    set_conn(host=server.url, max_retries=0)
    with pytest.raises(ValueError, match=match):
        OpenAIBatchHook().retrieve_batch(value)
    with pytest.raises(ValueError, match=match):
        OpenAIBatchHook().cancel_batch(value)
    assert server.requests == []


DAY = {"anchor": "created_at", "seconds": 86_400}


@pytest.mark.parametrize(
    "value",
    [86_400, "86400", " 86400 ", {"seconds": 86_400}, {"anchor": "created_at", "seconds": "86400"},
     {"seconds": " 86400\n"}, '{"anchor": "created_at", "seconds": "86400"}', '{"seconds": 86400}'],
)  # fmt: skip
def test_every_rendered_form_becomes_integer_seconds(value: Any) -> None:
    assert validate_output_expires_after(value) == DAY
    body, _ = create_batch_body(
        input_file_id="file-1",
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata=None,
        output_expires_after=value,
        idempotency_key="k",
    )
    assert body["output_expires_after"] == DAY and type(body["output_expires_after"]["seconds"]) is int


def test_one_second_is_the_smallest_expiry_sent() -> None:
    # The service's own range (OpenAI 1 h, Azure 14 d at least) is left to the service.
    assert validate_output_expires_after({"seconds": "1"}) == {"anchor": "created_at", "seconds": 1}


def test_a_long_rendered_string_is_cut_to_80_characters_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        validate_output_expires_after("y" * 100)
    assert str(info.value).endswith(", got the string '" + "y" * 80 + "'")


@pytest.mark.parametrize("value", [None, "", "  "])
def test_nothing_rendered_is_no_expiry(value: Any) -> None:
    assert validate_output_expires_after(value) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [({"seconds": "a day"}, "output_expires_after.seconds must be a positive integer, got 'a day'"),
     ({"seconds": "--5"}, "output_expires_after.seconds must be a positive integer, got '--5'"),
     ({"seconds": "-5"}, "output_expires_after.seconds must be a positive integer, got -5"),
     ({"seconds": "0"}, "output_expires_after.seconds must be a positive integer, got 0"),
     ({"seconds": "1e3"}, "output_expires_after.seconds must be a positive integer, got '1e3'"),
     ({"seconds": "\u0663"}, "output_expires_after.seconds must be a positive integer, got '\u0663'"),  # not ASCII
     ({"seconds": 1.5}, "output_expires_after.seconds must be a positive integer, got 1.5"),
     ({"seconds": True}, "output_expires_after.seconds must be a positive integer, got True"),
     ({}, "output_expires_after.seconds must be a positive integer, got None"),
     ({"anchor": "last_active_at", "seconds": 3600}, "output_expires_after.anchor must be 'created_at', got "
      "'last_active_at'"),
     ({"anchor": None, "seconds": 3600}, "output_expires_after.anchor must be 'created_at', got None"),
     ({"seconds": 3600, "days": 1}, "output_expires_after must be seconds or"),
     ("--5", "output_expires_after must be seconds or {'anchor': 'created_at', 'seconds': N}, got the string '--5'"),
     ("soon", "output_expires_after must be seconds or {'anchor': 'created_at', 'seconds': N}, got the string 'soon'"),
     (True, "output_expires_after must be seconds or"),
     ([3600], "output_expires_after must be seconds or")],
)  # fmt: skip
def test_nonsense_names_the_field(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_output_expires_after(value)
    assert str(info.value).startswith(message)


def test_the_limits_hold_up_to_their_last_allowed_value() -> None:
    assert check_id("batch_id", "b" * 2048) == "b" * 2048
    with pytest.raises(ValueError, match="at most 2048"):
        check_id("batch_id", "b" * 2049)
    assert validate_metadata({"k" * 64: "v" * 512}) == {"k" * 64: "v" * 512}
    # 15 pairs of the user's, and the tag under the key earlier versions' batches carry too (they are found by it).
    body, key = create_batch_body(
        input_file_id="file-1",
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={f"k{i}": "v" for i in range(15)},
        output_expires_after=None,
        idempotency_key="run-key",
    )
    assert (key, len(body["metadata"]), body["metadata"]["airflow_idempotency_key"]) == ("run-key", 16, "run-key")
