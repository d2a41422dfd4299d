"""Writing through a job's :class:`Destination` as the merge does, and the owners of the destination tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from airflow_provider_openai_batch.job.destination import OWNER_SUFFIX, Destination, task_instance_owner
from tests._kit.ti import FakeTI, context


def owner(run_id: str = "run_1", *, map_index: int = -1, task_id: str = "task", try_number: int = 1) -> dict[str, Any]:
    """The owner record of a task instance of dag ``dag`` (``try_number`` does not change it)."""
    ti = FakeTI(task_id=task_id, run_id=run_id, map_index=map_index, try_number=try_number)
    return task_instance_owner(context(ti))


def put(destination: Destination, name: str, data: bytes) -> str:
    """Write ``data`` as ``name`` the way the merge does (scratch file, then publish); returns where it is."""
    with destination.writer(name) as (out, scratch):
        out.write(data)
    return destination.publish(name, scratch)


@dataclass(frozen=True)
class Place:
    """A destination as a test gives it (``value``: a folder, a URI or an ``ObjectStoragePath``) and the folder or
    prefix it is, read and written straight through fsspec, behind the code under test's back."""

    value: Any
    fs: Any
    root: str

    def names(self) -> list[str]:
        """The names under the folder, hidden ones included."""
        if not self.fs.exists(self.root):
            return []
        return sorted(PurePosixPath(path).name for path in self.fs.ls(self.root, detail=False))

    def read(self, name: str) -> bytes:
        return bytes(self.fs.cat_file(f"{self.root}/{name}"))

    def write(self, name: str, data: bytes) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(f"{self.root}/{name}", data)

    def owner_of(self, name: str) -> Any:
        """The owner recorded beside ``name``."""
        return json.loads(self.read(name + OWNER_SUFFIX))["owner"]
