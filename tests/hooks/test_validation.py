"""Id checks (hooks/validation.py): any id a URL path segment can carry, percent-encoded; path tricks refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.hooks.validation import MAX_ID_LENGTH, path_id
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
