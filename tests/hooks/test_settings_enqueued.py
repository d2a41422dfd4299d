"""The enqueued limits a connection carries (extras ``max_enqueued_tokens`` and ``max_enqueued_requests``)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.capacity import EnqueuedLimit, EnqueuedLimits
from airflow_provider_openai_batch.exceptions import InvalidConnectionError
from airflow_provider_openai_batch.hooks._settings import ConnectionSettings


def enqueued(extra: Any) -> EnqueuedLimits:
    return ConnectionSettings.from_connection_fields("c", host=None, password="sk-x", extra=extra).enqueued_limits


def test_not_set_by_default() -> None:
    assert enqueued({}) == EnqueuedLimits() and not enqueued(None).is_set


def test_read_from_the_extras_as_numbers_mappings_or_json_text() -> None:
    extra = '{"max_enqueued_tokens": {"gpt-4o-mini": 2000000, "*": 90000}, "max_enqueued_requests": "500"}'
    assert enqueued(extra) == EnqueuedLimits(
        tokens=EnqueuedLimit(90_000, (("gpt-4o-mini", 2_000_000),)), requests=EnqueuedLimit(500)
    )
    # A form or a URI gives text: a JSON object in it is read as a mapping.
    assert enqueued({"max_enqueued_tokens": '{"gpt-4o": 90000}'}).tokens == EnqueuedLimit(None, (("gpt-4o", 90_000),))


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_enqueued_tokens", 0), ("max_enqueued_requests", "many"), ("max_enqueued_tokens", {"gpt-4o": -1})],
)
def test_a_bad_extra_names_the_connection_the_extra_and_the_value(key: str, value: Any) -> None:
    with pytest.raises(InvalidConnectionError, match=rf"Connection 'c': extra '{key}'.* must be a positive integer"):
        enqueued({key: value})
