"""How much one batch input file may hold: the service's per-file limits, and how a request counts against them.

The limits differ by service (Azure OpenAI allows twice OpenAI's requests per file) and by gateway, so the
connection carries them (:attr:`ConnectionSettings.file_limits`), with these defaults by API type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch.endpoints import EMBEDDINGS, ENDPOINTS

__all__ = [
    "AZURE_MAX_REQUESTS",
    "MAX_EMBEDDING_INPUTS",
    "MAX_INPUT_BYTES",
    "MAX_REQUESTS",
    "FileLimits",
    "embedding_inputs",
]

#: Most requests one OpenAI batch input file may hold (Azure allows 100,000: pass ``max_requests``).
MAX_REQUESTS = 50_000
#: Largest batch input file OpenAI accepts: its documented "200 MB", read as MiB (the stricter reading
#: of the two would be 200,000,000 bytes; pass ``max_bytes`` to be more cautious).
MAX_INPUT_BYTES = 200 * 1024 * 1024
#: Requests one Azure OpenAI batch input file may hold.
AZURE_MAX_REQUESTS = 100_000
#: Embedding inputs (strings or token arrays) one ``/v1/embeddings`` batch may hold across all its requests.
MAX_EMBEDDING_INPUTS = 50_000

_FIELDS = ("max_requests", "max_bytes", "max_embedding_inputs")


def embedding_inputs(body: Mapping[str, Any]) -> int:
    """Embedding inputs of one request: a list of strings (or of token lists) counts each; else 1.

    A list of integers is one token array, so one input. Counted as the endpoint registry says.
    """
    return ENDPOINTS[EMBEDDINGS].inputs(body)


@dataclass(frozen=True)
class FileLimits:
    """The most one batch input file (one batch) may hold.

    :param max_requests: requests (lines) per file.
    :param max_bytes: bytes per file, as uploaded.
    :param max_embedding_inputs: embedding inputs per file, counted only for ``/v1/embeddings``
        (a request whose ``input`` is a list of ``k`` strings counts ``k``).
    """

    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_INPUT_BYTES
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def for_api_type(cls, api_type: str) -> FileLimits:
        """The documented per-file limits of the service behind a connection (``openai`` or ``azure``)."""
        if api_type == "azure":
            return cls(max_requests=AZURE_MAX_REQUESTS)
        return cls()

    def with_overrides(
        self,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_embedding_inputs: int | None = None,
    ) -> FileLimits:
        """These limits with some replaced, up or down (``None`` keeps one); for an operator's override."""
        asked = {"max_requests": max_requests, "max_bytes": max_bytes, "max_embedding_inputs": max_embedding_inputs}
        return FileLimits(**{name: getattr(self, name) if value is None else value for name, value in asked.items()})

    def narrowed(
        self,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_embedding_inputs: int | None = None,
    ) -> FileLimits:
        """These limits with the user's smaller ones applied.

        :raises ValueError: when a user limit is above the service's, since a file that large would be
            rejected after upload; a service that allows more says so on its connection.
        """
        asked = {"max_requests": max_requests, "max_bytes": max_bytes, "max_embedding_inputs": max_embedding_inputs}
        values: dict[str, int] = {}
        for name, value in asked.items():
            allowed = getattr(self, name)
            if value is None:
                values[name] = allowed
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}_per_batch must be a positive integer, got {value!r}")
            if value > allowed:
                raise ValueError(
                    f"{name}_per_batch={value:,} is over the connection's limit of {allowed:,} per batch; "
                    "a larger shard would be rejected after upload"
                )
            values[name] = value
        return FileLimits(**values)

    def describe(self) -> str:
        """The limits in words, for error messages."""
        return (
            f"{self.max_requests:,} requests, {self.max_bytes:,} bytes and "
            f"{self.max_embedding_inputs:,} embedding inputs per file"
        )

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileLimits:
        return cls(**{key: int(data[key]) for key in _FIELDS})
