"""Where a job's merged files go: a local folder (written in place, renamed when complete) or object storage."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["Destination"]

_COPY_CHUNK = 1024 * 1024


class Destination:
    """A folder for the merged ``<name>_output.jsonl`` and ``<name>_error.jsonl``.

    :param target: a local folder, a URI (``s3://bucket/prefix``, ``file://...``) or an ``ObjectStoragePath``.
    :param workdir: a local scratch folder; files for object storage are merged there, then streamed up.
    """

    def __init__(self, target: Any, workdir: Path) -> None:
        self.target = target
        self.workdir = workdir
        text = os.fspath(target) if isinstance(target, (str, os.PathLike)) else None
        self.local = Path(text) if text is not None and "://" not in text else None

    def _remote(self, name: str) -> Any:
        if hasattr(self.target, "fs") and hasattr(self.target, "open"):
            return self.target / name
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(os.fspath(self.target)) / name

    def where(self, name: str) -> str:
        return str(self.local / name) if self.local is not None else str(self._remote(name))

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[tuple[IO[bytes], Path]]:
        """A local binary file to write ``name`` into; put in place when the block ends without error."""
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            scratch = self.local / f".{name}.part"
        else:
            scratch = self.workdir / name
        try:
            with open(scratch, "wb") as out:
                yield out, scratch
        except BaseException:
            with contextlib.suppress(OSError):
                scratch.unlink()
            raise

    def publish(self, name: str, scratch: Path) -> str:
        """Move a finished scratch file into place; returns where it is."""
        if self.local is not None:
            os.replace(scratch, self.local / name)
            return str(self.local / name)
        remote = self._remote(name)
        with contextlib.suppress(Exception):  # object stores have no folders; a local file system needs one
            remote.parent.mkdir(parents=True, exist_ok=True)
        with open(scratch, "rb") as source, remote.open("wb") as out:
            shutil.copyfileobj(source, out, _COPY_CHUNK)
        scratch.unlink()
        return str(remote)

    def discard(self, name: str, scratch: Path) -> None:
        """Drop a scratch file that stays empty, and a stale ``name`` from an earlier run."""
        with contextlib.suppress(OSError):
            scratch.unlink()
        with contextlib.suppress(Exception):
            if self.local is not None:
                (self.local / name).unlink(missing_ok=True)
            else:
                remote = self._remote(name)
                if remote.exists():
                    remote.unlink()
