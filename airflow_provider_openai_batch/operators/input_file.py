"""Where a batch input comes from: a local path, a URI (``file://``, ``s3://``, ...) or an ``ObjectStoragePath``.

Shared by the Create and the Job operators; object-storage files are opened with small blocks so that they
stream like local files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

__all__ = ["InputFile", "jsonl_name"]


class InputFile:
    """A batch input given as a local path, a ``file://``/``s3://``/... URI or an ``ObjectStoragePath``."""

    def __init__(self, source: Any) -> None:
        self.source = source
        text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        self.local: Path | None = None
        if text is not None and "://" not in text:
            self.local = Path(text)
        elif text is not None and text.startswith("file://") and not hasattr(source, "fs"):
            self.local = Path(text[len("file://") :])
        self.name = (
            self.local.name if self.local is not None else str(getattr(self._storage_path(), "name", "input.jsonl"))
        )

    def _storage_path(self) -> Any:
        if hasattr(self.source, "fs") and hasattr(self.source, "open"):
            return self.source
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(os.fspath(self.source))

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        if self.local is not None:
            if not self.local.is_file():
                raise FileNotFoundError(f"Batch input file not found: {self.local}")
            with self.local.open("rb") as handle:
                yield handle
            return
        from airflow_provider_openai_batch.batch_input import STORAGE_BLOCK_SIZE

        path = self._storage_path()
        if not path.exists():
            raise FileNotFoundError(f"Batch input file not found: {path}")
        with path.open("rb", block_size=STORAGE_BLOCK_SIZE) as handle:
            yield cast(BinaryIO, handle)

    def __str__(self) -> str:
        return str(self.local if self.local is not None else self.source)


def jsonl_name(name: str) -> str:
    """The upload name: the input's own, with the ``.jsonl`` suffix the Batch API wants."""
    return name if name.endswith(".jsonl") else f"{Path(name).stem or 'batch_input'}.jsonl"
