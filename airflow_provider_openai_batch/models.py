"""Typed, immutable models of the OpenAI Batch and Files API objects.

Every model parses real responses tolerantly (explicit ``null``, missing optional keys, unknown new
keys) and turns back into plain JSON with :meth:`to_dict` so that it can travel through XCom and
trigger events. :class:`BatchStatus` is the one table that says what a status means; the sensor,
the trigger and the operators all ask it rather than keeping their own lists.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchPage",
    "BatchStatus",
    "DeletedFile",
    "FileObject",
    "RequestCounts",
    "Usage",
]


class BatchStatus(str, enum.Enum):
    """Status of a batch, with what each one means for a caller that waits on it.

    ``cancelling`` is *not* terminal: it lasts up to ten minutes and ends in ``cancelled``.
    """

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True when the batch will never change status again."""
        return self in _TERMINAL

    @property
    def is_success(self) -> bool:
        """True only for ``completed``: every request was processed (some may still have failed)."""
        return self is BatchStatus.COMPLETED

    @property
    def may_have_partial_output(self) -> bool:
        """True for terminal statuses whose finished requests are kept in an output file."""
        return self in (BatchStatus.EXPIRED, BatchStatus.CANCELLED)

    @property
    def is_cancellable(self) -> bool:
        """True while a cancel request can still change the outcome."""
        return not self.is_terminal and self is not BatchStatus.CANCELLING

    @property
    def is_known(self) -> bool:
        """False for a status this version does not know (the API adds some; gateways invent their own)."""
        return self._name_ != _UNKNOWN_NAME

    @classmethod
    def parse(cls, value: object) -> BatchStatus:
        """Parse a status string, tolerating case and surrounding spaces (Azure sends ``Validating``).

        A status this version does not know parses too, as a status that is not terminal (so a waiting task
        keeps waiting, and says so) and keeps its text in :attr:`value`.
        """
        return cls(str(value).strip().lower())

    @classmethod
    def _missing_(cls, value: object) -> BatchStatus:
        # An unknown status becomes a member outside the enum's list (named UNKNOWN): not terminal, and
        # written back unchanged by ``to_dict``.
        member = str.__new__(cls, str(value))
        member._name_ = _UNKNOWN_NAME
        member._value_ = str(value)
        return member


_UNKNOWN_NAME = "UNKNOWN"

_TERMINAL = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})


def _opt_str(value: object) -> str | None:
    # Azure has been seen sending "" where OpenAI sends null for absent file ids.
    if value is None or value == "":
        return None
    return str(value)


def _opt_int(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            # Older Azure examples carry ISO-8601 strings for timestamps, with 7 fractional digits
            # (which Python 3.10's fromisoformat rejects) and sometimes no offset (meaning UTC, not local time).
            import re
            from datetime import datetime, timezone

            text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return int(parsed.timestamp())
    return None


def _int(value: object) -> int:
    parsed = _opt_int(value)
    return 0 if parsed is None else parsed


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


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


@dataclass(frozen=True)
class FileObject:
    """An uploaded or generated file (``purpose`` ``batch`` for inputs, ``batch_output`` for results)."""

    id: str
    bytes: int | None = None
    created_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    object: str = "file"
    expires_at: int | None = None
    status: str | None = None
    status_details: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileObject:
        """:raises ValueError: when the response has no ``id``."""
        if not isinstance(data, Mapping) or not data.get("id"):
            raise ValueError(f"Not a file object (no 'id'): {str(data)[:200]}")
        return cls(
            id=str(data["id"]),
            object=str(data.get("object") or "file"),
            bytes=_opt_int(data.get("bytes")),
            created_at=_opt_int(data.get("created_at")),
            expires_at=_opt_int(data.get("expires_at")),
            filename=_opt_str(data.get("filename")),
            purpose=_opt_str(data.get("purpose")),
            status=_opt_str(data.get("status")),
            status_details=_opt_str(data.get("status_details")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": self.status_details,
        }


@dataclass(frozen=True)
class DeletedFile:
    """Answer of ``DELETE /files/{id}``."""

    id: str
    deleted: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeletedFile:
        return cls(id=str(data.get("id") or ""), deleted=bool(data.get("deleted")))
