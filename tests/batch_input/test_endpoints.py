"""Tests of the endpoint forms."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import (
    normalize_endpoint,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/chat/completions", "/v1/chat/completions"),
        ("chat/completions", "/v1/chat/completions"),
        ("v1/embeddings", "/v1/embeddings"),
        (" /v1/responses ", "/v1/responses"),
    ],
)
def test_normalize_endpoint(url: str, expected: str) -> None:
    assert normalize_endpoint(url) == expected


@pytest.mark.parametrize("bad", ["", "  ", None, 3])
def test_normalize_endpoint_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        normalize_endpoint(bad)
