"""The batch object and its parts (request counts, usage, errors), and a page of ``GET /batches``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fields import _int, _mapping, _opt_int, _opt_str
from .status import BatchStatus


@dataclass(frozen=True)
class RequestCounts:
    """How many requests a batch holds and how many finished so far.

    :param total: requests in the input file (0 until validated).
    :param completed: requests that got a successful response.
    :param failed: requests that ended in the error file.
    """

    total: int = 0
    completed: int = 0
    failed: int = 0

    @classmethod
    def from_dict(cls, data: object) -> RequestCounts:
        raw = _mapping(data)
        return cls(total=_int(raw.get("total")), completed=_int(raw.get("completed")), failed=_int(raw.get("failed")))

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}

    @property
    def processed(self) -> int:
        """Requests that finished, successfully or not."""
        return self.completed + self.failed

    @property
    def percent_done(self) -> float:
        """Share of requests processed, 0..100 (0 while the total is unknown)."""
        return 100.0 * self.processed / self.total if self.total else 0.0


@dataclass(frozen=True)
class Usage:
    """Token usage of a batch (only on batches created after 2025-09-07)."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_dict(cls, data: object) -> Usage | None:
        if not isinstance(data, Mapping):
            return None
        return cls(
            input_tokens=_int(data.get("input_tokens")),
            cached_tokens=_int(_mapping(data.get("input_tokens_details")).get("cached_tokens")),
            output_tokens=_int(data.get("output_tokens")),
            reasoning_tokens=_int(_mapping(data.get("output_tokens_details")).get("reasoning_tokens")),
            total_tokens=_int(data.get("total_tokens")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class BatchError:
    """One batch-level error, e.g. an invalid input line found during validation."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None

    @classmethod
    def from_dict(cls, data: object) -> BatchError:
        raw = _mapping(data)
        return cls(
            code=_opt_str(raw.get("code")),
            message=_opt_str(raw.get("message")),
            param=_opt_str(raw.get("param")),
            line=_opt_int(raw.get("line")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        code = f"[{self.code}] " if self.code else ""
        return f"{where}{code}{self.message or 'no message'}"


@dataclass(frozen=True)
class BatchErrors:
    """The ``errors`` list of a batch that failed validation."""

    data: tuple[BatchError, ...] = ()

    @classmethod
    def from_dict(cls, data: object) -> BatchErrors | None:
        if data is None:
            return None
        raw = data.get("data") if isinstance(data, Mapping) else data
        items = raw if isinstance(raw, list) else []
        return cls(data=tuple(BatchError.from_dict(item) for item in items))

    def to_dict(self) -> dict[str, Any]:
        return {"object": "list", "data": [error.to_dict() for error in self.data]}

    def summary(self, limit: int = 10) -> str:
        """The first ``limit`` errors, one per line, for a task failure message."""
        lines = [f"  - {error}" for error in self.data[:limit]]
        if len(self.data) > limit:
            lines.append(f"  ... and {len(self.data) - limit} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class Batch:
    """A batch job, with every field of the API's batch object.

    Unknown keys the API adds later are kept in :attr:`extra` and written back by :meth:`to_dict`.
    """

    id: str
    status: BatchStatus
    endpoint: str | None = None
    input_file_id: str | None = None
    completion_window: str | None = None
    object: str = "batch"
    model: str | None = None
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    usage: Usage | None = None
    metadata: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _TIMESTAMPS = (
        "created_at",
        "in_progress_at",
        "expires_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
    )
    _KNOWN = frozenset(
        {
            "id",
            "object",
            "status",
            "endpoint",
            "input_file_id",
            "completion_window",
            "model",
            "errors",
            "output_file_id",
            "error_file_id",
            "request_counts",
            "usage",
            "metadata",
            *_TIMESTAMPS,
        }
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        """Build a batch from an API response or from :meth:`to_dict` output.

        :raises ValueError: when ``id`` or ``status`` is missing (an unknown status parses; see
            :meth:`BatchStatus.parse`).
        """
        if not isinstance(data, Mapping) or not data.get("id"):
            raise ValueError(f"Not a batch object (no 'id'): {str(data)[:200]}")
        if data.get("status") is None:
            raise ValueError(f"Batch {data['id']} has no 'status'")
        metadata = data.get("metadata")
        return cls(
            id=str(data["id"]),
            object=str(data.get("object") or "batch"),
            status=BatchStatus.parse(data["status"]),
            endpoint=_opt_str(data.get("endpoint")),
            input_file_id=_opt_str(data.get("input_file_id")),
            completion_window=_opt_str(data.get("completion_window")),
            model=_opt_str(data.get("model")),
            errors=BatchErrors.from_dict(data.get("errors")),
            output_file_id=_opt_str(data.get("output_file_id")),
            error_file_id=_opt_str(data.get("error_file_id")),
            request_counts=RequestCounts.from_dict(data.get("request_counts")),
            usage=Usage.from_dict(data.get("usage")),
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else None,
            extra={k: v for k, v in data.items() if k not in cls._KNOWN},
            **{name: _opt_int(data.get(name)) for name in cls._TIMESTAMPS},
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: every key of the API object, unknown keys kept."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "id": self.id,
                "object": self.object,
                "endpoint": self.endpoint,
                "model": self.model,
                "errors": self.errors.to_dict() if self.errors is not None else None,
                "input_file_id": self.input_file_id,
                "completion_window": self.completion_window,
                "status": self.status.value,
                "output_file_id": self.output_file_id,
                "error_file_id": self.error_file_id,
                **{name: getattr(self, name) for name in self._TIMESTAMPS},
                "request_counts": self.request_counts.to_dict(),
                "usage": self.usage.to_dict() if self.usage is not None else None,
                "metadata": dict(self.metadata) if self.metadata is not None else None,
            }
        )
        return out

    def summary(self) -> dict[str, Any]:
        """The compact, JSON-able view pushed to XCom as ``batch``: no input echo, no unknown keys."""
        return {
            "id": self.id,
            "status": self.status.value,
            "endpoint": self.endpoint,
            "model": self.model,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts": self.request_counts.to_dict(),
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "errors": [error.to_dict() for error in self.errors.data] if self.errors else [],
            **{name: getattr(self, name) for name in self._TIMESTAMPS},
        }

    @property
    def finished_at(self) -> int | None:
        """When the batch reached its terminal status, if it has."""
        return self.completed_at or self.failed_at or self.expired_at or self.cancelled_at


@dataclass(frozen=True)
class BatchPage:
    """One page of ``GET /batches``."""

    data: tuple[Batch, ...]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchPage:
        items = data.get("data") if isinstance(data, Mapping) else None
        batches = tuple(Batch.from_dict(item) for item in (items if isinstance(items, list) else []))
        has_more = data.get("has_more")
        return cls(
            data=batches,
            # A page without has_more: keep paging until a page comes back empty (as the SDK does).
            has_more=bool(has_more) if has_more is not None else bool(batches),
            first_id=_opt_str(data.get("first_id")) or (batches[0].id if batches else None),
            last_id=_opt_str(data.get("last_id")) or (batches[-1].id if batches else None),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [batch.to_dict() for batch in self.data],
            "first_id": self.first_id,
            "last_id": self.last_id,
            "has_more": self.has_more,
        }
