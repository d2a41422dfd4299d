"""The two values a batch input is described by: one request (one line), and a checked file's summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openai_batch.estimate import CostEstimate

__all__ = ["BatchRequest", "InputSummary"]


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: one line of the input file.

    :param custom_id: your key for the request; results come back in any order and are matched on it,
        so it must be unique in the file.
    :param body: the endpoint's normal request body; it must name the ``model`` (one model per file).
    :param url: the batch endpoint, e.g. ``/v1/chat/completions``; it must equal the batch's endpoint.
    :param method: always ``POST``: the only method the Batch API runs.
    """

    custom_id: str
    body: Mapping[str, Any]
    url: str
    method: str = "POST"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, endpoint: str | None = None) -> BatchRequest:
        """Build a request from an input line's object, filling ``url`` from ``endpoint`` when absent.

        Nothing is checked here: :func:`write_batch_input` and :func:`validate_batch_input` do it, with
        line numbers.
        """
        return cls(
            custom_id=data.get("custom_id"),  # type: ignore[arg-type]
            body=data.get("body"),  # type: ignore[arg-type]
            url=data.get("url", endpoint),  # type: ignore[arg-type]
            method=data.get("method", "POST"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The input line's object, keys in the order of OpenAI's examples."""
        return {"custom_id": self.custom_id, "method": self.method, "url": self.url, "body": self.body}

    def to_line(self) -> str:
        """The request as one compact JSON line, without a trailing newline.

        Non-ASCII text is written as UTF-8 rather than ``\\u`` escapes: it is smaller and the API reads it.

        :raises ValueError: when the body holds ``NaN``/``Infinity``, which JSON cannot carry.
        :raises TypeError: when the body holds a value JSON cannot encode.
        """
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class InputSummary:
    """What a valid batch input holds, as found by :func:`validate_batch_input` or :func:`write_batch_input`.

    :param path: the file checked or written, ``None`` for a stream without a name.
    :param requests: number of requests (lines) in the file.
    :param bytes: size of the file in bytes, as it will be uploaded.
    :param model: the one model all requests use (the deployment name on Azure).
    :param endpoint: the endpoint all lines target, in ``/v1/...`` form (see :func:`normalize_endpoint`).
    :param sha256: hex SHA-256 of the file's bytes; a changed value means a changed input, which lets a
        re-run tell whether an already uploaded file can be reused.
    :param embedding_inputs: embedding inputs across all requests of an ``/v1/embeddings`` file (an input
        list counts each element), 0 for other endpoints.
    :param warnings: what the service may reject or ignore without failing the check (e.g. ``max_tokens``
        for reasoning models), each once with its first line.
    :param estimate: an upper bound of what the batch will cost, counted in the same pass (see
        :mod:`~airflow_provider_openai_batch.estimate`); ``None`` when not computed.
    """

    path: str | None
    requests: int
    bytes: int
    model: str | None
    endpoint: str | None
    sha256: str
    #: Left out of ``==``: two summaries of the same bytes are equal whatever prices were used.
    estimate: CostEstimate | None = field(default=None, compare=False)
    embedding_inputs: int = 0
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSummary:
        """Rebuild a summary from :meth:`to_dict` output (e.g. pulled from XCom)."""
        return cls(
            path=data.get("path"),
            requests=int(data.get("requests") or 0),
            bytes=int(data.get("bytes") or 0),
            model=data.get("model"),
            endpoint=data.get("endpoint"),
            sha256=str(data.get("sha256") or ""),
            estimate=CostEstimate.from_dict(data["estimate"]) if isinstance(data.get("estimate"), Mapping) else None,
            embedding_inputs=int(data.get("embedding_inputs") or 0),
            warnings=tuple(str(item) for item in data.get("warnings") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, small enough for XCom."""
        return {
            "path": self.path,
            "requests": self.requests,
            "bytes": self.bytes,
            "model": self.model,
            "endpoint": self.endpoint,
            "sha256": self.sha256,
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
            "embedding_inputs": self.embedding_inputs,
            "warnings": list(self.warnings),
        }
