"""The file object (an uploaded input, a result or error file) and the answer to deleting one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._fields import _opt_int, _opt_str


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
