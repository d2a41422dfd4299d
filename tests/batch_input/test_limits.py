"""Tests of the per-file limits and of how embedding inputs are counted."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input.limits import FileLimits, embedding_inputs


@pytest.mark.parametrize(
    ("value", "count"),
    [("one text", 1), (["a", "b", "c"], 3), ([1, 2, 3], 1), ([[1, 2], [3]], 2), ([], 1), (None, 1)],
    ids=["string", "strings", "token_array", "token_arrays", "empty", "missing"],
)
def test_embedding_inputs(value: Any, count: int) -> None:
    assert embedding_inputs({"input": value}) == count


def test_limits_by_api_type_and_overrides() -> None:
    azure = FileLimits.for_api_type("azure")
    assert (azure.max_requests, FileLimits.for_api_type("openai").max_requests) == (100_000, 50_000)
    assert azure.with_overrides(max_requests=150_000, max_bytes=None).max_requests == 150_000
    assert azure.with_overrides(max_bytes=10).to_dict() == {
        "max_requests": 100_000,
        "max_bytes": 10,
        "max_embedding_inputs": 50_000,
    }
    assert FileLimits.from_dict(azure.to_dict()) == azure
    assert "100,000 requests" in azure.describe()


@pytest.mark.parametrize("bad", [0, -5, True, 1.5])
def test_limits_must_be_positive_integers(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_requests"):
        FileLimits(max_requests=bad)
