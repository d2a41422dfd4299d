"""How much one shard batch may hold: the service's per-file limits, narrowed by the user's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch.batch_input import MAX_INPUT_BYTES, MAX_REQUESTS

__all__ = ["AZURE_MAX_REQUESTS", "MAX_EMBEDDING_INPUTS", "ShardLimits"]

#: Requests one Azure OpenAI batch input file may hold.
AZURE_MAX_REQUESTS = 100_000
#: Embedding inputs (strings or token arrays) one ``/v1/embeddings`` batch may hold across all its requests.
MAX_EMBEDDING_INPUTS = 50_000


@dataclass(frozen=True)
class ShardLimits:
    """The most one shard (one batch input file) may hold.

    :param max_requests: requests (lines) per shard.
    :param max_bytes: bytes per shard file, as uploaded.
    :param max_embedding_inputs: embedding inputs per shard, counted only for ``/v1/embeddings``
        (a request whose ``input`` is a list of ``k`` strings counts ``k``).
    """

    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_INPUT_BYTES
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_bytes", "max_embedding_inputs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def for_api_type(cls, api_type: str) -> ShardLimits:
        """The documented per-file limits of the service behind a connection (``openai`` or ``azure``)."""
        if api_type == "azure":
            return cls(max_requests=AZURE_MAX_REQUESTS)
        return cls()

    def narrowed(
        self,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_embedding_inputs: int | None = None,
    ) -> ShardLimits:
        """These limits with the user's smaller ones applied.

        :raises ValueError: when a user limit is above the service's, since a shard that large would be
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
        return ShardLimits(**values)

    def to_dict(self) -> dict[str, int]:
        return {
            "max_requests": self.max_requests,
            "max_bytes": self.max_bytes,
            "max_embedding_inputs": self.max_embedding_inputs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardLimits:
        return cls(**{key: int(data[key]) for key in ("max_requests", "max_bytes", "max_embedding_inputs")})
