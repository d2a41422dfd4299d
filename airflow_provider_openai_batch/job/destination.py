"""Where a job's merged files go, under names no other task instance shares, never over another's file.

**Names.** :func:`merged_names` gives ``<stem>__<run>[__<map index>]_output.jsonl`` and ``..._error.jsonl``: the
input's stem, the run id made safe for a file name, and the map index of a mapped task. Mapped tasks whose inputs
share a name, and daily runs writing to one destination, so get files of their own.

**Writes.** A file appears whole or not at all: a local file is written beside its name as a hidden
``.<name>.<token>.part`` and renamed into place; on object storage the local scratch file is uploaded to a
temporary key beside the name and moved onto it (fsspec's ``mv``: a rename on a local file system, a server-side
copy on S3 or GCS), so that a reader never sees half a file, nor a failed upload's remains under the name.

**Ownership.** With an ``owner`` (:func:`task_instance_owner`), each name is claimed by a small sidecar
``<name>.owner``, a JSON object naming the task instance (``dag_id``, ``task_id``, ``run_id``, ``map_index``),
written before the file. A sidecar rather than a first line or object metadata: the merged file stays exactly
the JSONL a user expects (no header line to skip), and a sidecar works on every file system and object store
alike, where user metadata is S3's and GCS's but not a local folder's; a person can read it with ``cat``, and
``*.jsonl`` globs do not match it. :meth:`Destination.check` refuses a name that another task instance claimed,
or a file there whose owner is not recorded, before anything is uploaded or billed; :meth:`Destination.publish`
checks again before the file is put in place. The same task instance (a retry, a clear) takes its own files
again; ``overwrite=True`` takes any. A claim is exclusive on a local folder; on object storage it is written and
read back, which orders task instances that come one after another (retries, daily runs, mapped tasks), not two
that claim the same name within the same moment.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from airflow_provider_openai_batch.exceptions import DestinationOwnedError
from airflow_provider_openai_batch.job.names import local_file_name

__all__ = ["OWNER_SUFFIX", "Destination", "merged_base", "merged_names", "task_instance_owner"]

_COPY_CHUNK = 1024 * 1024
#: Appended to a file's name to name its owner record.
OWNER_SUFFIX = ".owner"
#: Longest stem and run id kept as they are, in bytes: with the map index, the suffix, ``.owner`` and a
#: temporary name's marks, a name stays under the 255 bytes a file name may have.
_STEM_BYTES = 80
_RUN_CHARS = 64
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def merged_base(input_name: str, *, run_id: str, map_index: int | None = None) -> str:
    """The merged files' common start: ``<stem>__<run>``, and ``__<map index>`` for a mapped task instance.

    * ``stem``: the input's file name without its extension (``job`` for an empty name), as it is; one longer
      than 80 bytes, or holding a character that is not printable or a backslash, is shortened by
      :func:`~airflow_provider_openai_batch.job.names.local_file_name` (its start and a hash).
    * ``run``: the run id with every run of characters other than letters, digits, ``.``, ``_`` and ``-`` made
      ``_`` (``scheduled__2026-01-01T00:00:00+00:00`` -> ``scheduled__2026-01-01T00_00_00_00_00``); one longer
      than 64 characters is shortened to its start and a hash.

    Two run ids that differ only in the characters made ``_`` share a name; the owner record keeps one from
    overwriting the other's file (see :class:`Destination`).

    :param input_name: the input's file name or path: only its stem is used.
    :param run_id: the DAG run's id: daily runs writing to one destination must not share names.
    :param map_index: the task instance's map index; ``None`` or negative for a task that is not mapped.
    """
    stem = Path(input_name).stem or "job"
    if len(stem.encode("utf-8", "surrogatepass")) > _STEM_BYTES or not stem.isprintable() or "\\" in stem:
        stem = local_file_name(stem, suffix="")
    run = _UNSAFE_RUN.sub("_", run_id) or "run"
    if len(run) > _RUN_CHARS:
        run = local_file_name(run_id, suffix="")
    base = f"{stem}__{run}"
    return f"{base}__{map_index}" if map_index is not None and map_index >= 0 else base


def merged_names(context: Mapping[str, Any], input_name: str) -> tuple[str, str]:
    """The default ``(output name, error name)`` of the task instance in ``context`` (see :func:`merged_base`).

    :param context: the task's ``execute`` context; its ``ti`` gives the run id and the map index.
    :param input_name: the job's input file name or path.
    """
    ti = context["ti"]
    base = merged_base(input_name, run_id=str(ti.run_id), map_index=_map_index(ti))
    return f"{base}_output.jsonl", f"{base}_error.jsonl"


def task_instance_owner(context: Mapping[str, Any]) -> dict[str, Any]:
    """Who a merged file belongs to: the same for every try of a task instance, different for any other.

    :param context: the task's ``execute`` context.
    """
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": _map_index(ti)}


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", -1)
    return -1 if index is None else int(index)


class Destination:
    """A folder for a job's merged files: written whole, and only over files of the same task instance.

    :param target: a local folder, a URI (``s3://bucket/prefix``, ``file://...``) or an ``ObjectStoragePath``.
    :param workdir: a local scratch folder; files for object storage are merged there, then uploaded. Only
        :meth:`writer` for object storage needs it.
    :param owner: the task instance writing (:func:`task_instance_owner`): its names are claimed, and a file of
        another task instance is refused. ``None``: no ownership kept, any file is replaced (as before owners).
    :param overwrite: replace files whoever wrote them (the user's decision: e.g. a DAG renamed, or a
        destination deliberately shared), claiming them for ``owner``.
    """

    def __init__(
        self,
        target: Any,
        workdir: Path | None = None,
        *,
        owner: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.target = target
        self.workdir = workdir
        self.owner = json.loads(json.dumps(dict(owner))) if owner is not None else None
        self.overwrite = overwrite
        text = os.fspath(target) if isinstance(target, (str, os.PathLike)) else None
        self.local = Path(text) if text is not None and "://" not in text else None

    def _remote(self, name: str) -> Any:
        if hasattr(self.target, "fs") and hasattr(self.target, "open"):
            return self.target / name
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(os.fspath(self.target)) / name

    def _path(self, name: str) -> Any:
        return self.local / name if self.local is not None else self._remote(name)

    def where(self, name: str) -> str:
        return str(self._path(name))

    # -- ownership --------------------------------------------------------------------------------------------

    def check(self, names: Iterable[str]) -> None:
        """Make sure no other task instance's file is under any of ``names``, then claim them all for ``owner``.

        Call it before anything is uploaded or billed: a refusal then costs nothing. Without an ``owner``
        nothing is checked. A claim is kept until :meth:`discard` (the file is not written after all).

        :param names: the file names this task instance will write (both merged files: all or none is claimed).
        :raises DestinationOwnedError: a name holds a file or a claim of another task instance (or a file whose
            owner is not recorded), and ``overwrite`` is off; nothing was claimed.
        """
        if self.owner is None:
            return
        names = list(names)
        for name in names:
            self._refuse_if_taken(name)
        for name in names:
            self._claim(name)

    def _refuse_if_taken(self, name: str) -> None:
        if self.overwrite:
            return
        recorded = self._recorded_owner(name)
        if recorded is _NONE:
            if not self._path(name).exists():
                return
            raise DestinationOwnedError(self.where(name), None)
        if recorded != self.owner:
            raise DestinationOwnedError(self.where(name), recorded if isinstance(recorded, dict) else None)

    def _recorded_owner(self, name: str) -> Any:
        """The owner a sidecar records; ``_NONE`` when there is none; ``None`` when it is unreadable."""
        try:
            with self._path(name + OWNER_SUFFIX).open("rb") as handle:
                record = json.loads(handle.read(64 * 1024))
        except FileNotFoundError:
            return _NONE
        except (OSError, ValueError):
            return None
        return record.get("owner") if isinstance(record, dict) else None

    def _claim(self, name: str) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = json.dumps({"owner": self.owner, "file": name, "claimed_at": stamp}, sort_keys=True).encode()
        sidecar = name + OWNER_SUFFIX
        if self.local is None:
            self._upload(sidecar, io.BytesIO(record))
            if not self.overwrite and self._recorded_owner(name) != self.owner:  # read back: claimed since?
                self._refuse_if_taken(name)
            return
        self.local.mkdir(parents=True, exist_ok=True)
        part = _part(self.local / sidecar)
        part.write_bytes(record)
        try:
            try:  # a hard link is exclusive and whole: of two task instances claiming a free name, one gets it
                os.link(part, self.local / sidecar)
                return
            except FileExistsError:
                self._refuse_if_taken(name)  # claimed since it was checked: refused unless ours (or overwrite)
            except OSError:
                pass  # a file system without hard links: replaced as checked
            os.replace(part, self.local / sidecar)
        finally:
            part.unlink(missing_ok=True)

    # -- writing ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[tuple[IO[bytes], Path]]:
        """A local binary file to write ``name`` into; put it in place with :meth:`publish` afterwards.

        The scratch file is removed when the block ends with an error.
        """
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            scratch = _part(self.local / name)
        elif self.workdir is not None:
            scratch = self.workdir / f".{name}.part"  # never a result file's name: those are never hidden
        else:
            raise ValueError("Writing to object storage needs a local workdir to merge in")
        try:
            with open(scratch, "wb") as out:
                yield out, scratch
        except BaseException:
            with contextlib.suppress(OSError):
                scratch.unlink()
            raise

    def publish(self, name: str, scratch: Path) -> str:
        """Put a finished scratch file in place as ``name``, whole or not at all; returns where it is.

        :raises DestinationOwnedError: another task instance took ``name`` since :meth:`check`; the scratch file
            is removed and nothing is written (the results are still the service's to merge again).
        """
        try:
            self.check([name])
        except DestinationOwnedError:
            with contextlib.suppress(OSError):
                scratch.unlink()
            raise
        if self.local is not None:
            os.replace(scratch, self.local / name)
            return str(self.local / name)
        with open(scratch, "rb") as source:
            where = self._upload(name, source)
        scratch.unlink()
        return where

    def _upload(self, name: str, source: IO[bytes]) -> str:
        """Put ``source`` on object storage as ``name`` whole: uploaded to a temporary key beside it, then moved."""
        remote = self._remote(name)
        part = _part(remote)
        with contextlib.suppress(Exception):  # object stores have no folders; a local file system needs one
            remote.parent.mkdir(parents=True, exist_ok=True)
        try:
            with part.open("wb") as out:
                shutil.copyfileobj(source, out, _COPY_CHUNK)
            part.fs.mv(part.path, remote.path)
        except BaseException:
            with contextlib.suppress(Exception):
                part.unlink()
            raise
        return str(remote)

    def discard(self, name: str, scratch: Path) -> None:
        """Drop a scratch file that stays empty, and ``name`` from an earlier try with its claim, when the file is
        this task instance's (or ``overwrite`` is on, or no owner is kept); another's file is left alone."""
        with contextlib.suppress(OSError):
            scratch.unlink()
        if self.owner is not None and not self.overwrite and self._recorded_owner(name) != self.owner:
            return
        for stale in (name, name + OWNER_SUFFIX) if self.owner is not None else (name,):
            with contextlib.suppress(Exception):
                path = self._path(stale)
                if path.exists():
                    path.unlink()


#: No owner record at all (a name never claimed), as opposed to ``None``: a record that cannot be read.
_NONE = object()


def _part(path: Any) -> Any:
    """A hidden temporary name beside ``path`` (a ``Path`` or an ``ObjectStoragePath``), unique to this write."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
