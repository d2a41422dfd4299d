"""The per-file batch limits a connection carries: defaults by API type, extras for gateways."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input.limits import FileLimits
from airflow_provider_openai_batch.exceptions import InvalidConnectionError
from airflow_provider_openai_batch.hooks._settings import ConnectionSettings

MB200 = 200 * 1024 * 1024


def limits(**extra: Any) -> FileLimits:
    return ConnectionSettings.from_connection_fields("c", host=None, password="sk-x", extra=extra).file_limits


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, FileLimits(50_000, MB200, 50_000)),
        ({"api_type": "openai"}, FileLimits(50_000, MB200, 50_000)),
        ({"api_type": "azure"}, FileLimits(100_000, MB200, 50_000)),
        ({"batch_max_requests": 10_000, "batch_max_bytes": "1000000"}, FileLimits(10_000, 1_000_000, 50_000)),
        ({"api_type": "azure", "batch_max_embedding_inputs": 7}, FileLimits(100_000, MB200, 7)),
    ],
    ids=["default", "openai", "azure", "gateway_extras", "azure_extra"],
)
def test_file_limits_by_api_type_and_extras(extra: dict[str, Any], expected: FileLimits) -> None:
    assert limits(**extra) == expected


@pytest.mark.parametrize("value", [0, -1, "many"])
def test_bad_limit_extra_names_the_key(value: Any) -> None:
    with pytest.raises(InvalidConnectionError, match="batch_max_requests"):
        limits(batch_max_requests=value)
