"""Split one JSONL input of any size into shard files within per-batch limits, checking every line once.

One streaming pass reads the input line by line (a line is never longer than one shard may be), applies the
validator's line rules, and appends each request to the open shard of its model, starting a new shard when
the next request would break a limit. Every ``custom_id`` goes into an on-disk index, so duplicates across
the whole input are found in memory that does not grow with the input. Nothing is uploaded here; an input
with any problem raises :class:`~airflow_provider_openai_batch.exceptions.BatchInputError` listing them all.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from airflow_provider_openai_batch.batch_input.checker import LineChecker, StopCheck
from airflow_provider_openai_batch.batch_input.limits import embedding_inputs
from airflow_provider_openai_batch.batch_input.reading import READ_CHUNK
from airflow_provider_openai_batch.endpoints import Endpoint, endpoint_spec, normalize_endpoint
from airflow_provider_openai_batch.estimate import CostEstimator
from airflow_provider_openai_batch.exceptions import BatchInputError
from airflow_provider_openai_batch.job.ids import leading_custom_id
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.plan import JobPlan, ShardInfo

__all__ = ["SplitInput", "embedding_inputs", "iter_bounded_lines", "open_index", "split_input"]

#: Shards of different models open at once; past it, the least recently used one is closed.
MAX_OPEN_SHARDS = 32
_WRITE_BUFFER = 256 * 1024
_ID_FLUSH = 20_000


@dataclass(frozen=True)
class SplitInput:
    """The plan of a split input and its shard files (index-aligned with ``plan.shards``)."""

    plan: JobPlan
    paths: tuple[Path, ...]
    #: the pre-flight cost bound, counted per model in the same pass (price it with ``result``).
    estimator: CostEstimator | None = None


def open_index(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """An on-disk SQLite database tuned for a throw-away index: small page cache, no journal, no fsync."""
    # Python's default transaction handling: inserts are grouped into one transaction until commit().
    db = sqlite3.connect(os.fspath(path))
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA temp_store=FILE")
    db.execute("PRAGMA cache_size=-4096")  # 4 MiB, whatever the job's size
    return db


class _Forgetful(dict[str, int]):
    """The checker's id map, kept empty: duplicates across a job are found in the on-disk index instead."""

    def __setitem__(self, key: str, value: int) -> None:
        return None


def iter_bounded_lines(stream: IO[Any], max_line: int) -> Iterator[bytes | int]:
    """The raw lines of ``stream`` (newline included), read with ``read(size)`` only (object storage files
    have no ``readline(limit)``); a line longer than ``max_line`` is never held: its length is yielded instead.
    """
    pending = bytearray()
    skipped = 0  # bytes of an over-long line read so far
    while chunk := stream.read(READ_CHUNK):
        pending += chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            if skipped:
                yield skipped + end + 1 - start
                skipped = 0
            elif end + 1 - start > max_line:
                yield end + 1 - start
            else:
                yield bytes(pending[start : end + 1])
            start = end + 1
        del pending[:start]
        if skipped or len(pending) > max_line:
            skipped += len(pending)
            pending.clear()
    if skipped:
        yield skipped
    elif pending:
        yield bytes(pending) if len(pending) <= max_line else len(pending)


class _Shard:
    def __init__(self, index: int, model: str | None, path: Path, first_line: int) -> None:
        self.index = index
        self.model = model
        self.path = path
        self.out: IO[bytes] = open(path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115 - closed in close()
        self.first_line = first_line
        self.last_line = first_line
        self.requests = 0
        self.bytes = 0
        self.embedding_inputs = 0

    def fits(self, size: int, inputs: int, limits: ShardLimits) -> bool:
        return (
            self.requests < limits.max_requests
            and self.bytes + size <= limits.max_bytes
            and self.embedding_inputs + inputs <= limits.max_embedding_inputs
        )

    def add(self, line_no: int, raw: bytes, inputs: int) -> None:
        self.out.write(raw)
        self.last_line = line_no
        self.requests += 1
        self.bytes += len(raw)
        self.embedding_inputs += inputs

    def close(self) -> ShardInfo:
        self.out.close()
        return ShardInfo(
            index=self.index,
            model=self.model,
            first_line=self.first_line,
            last_line=self.last_line,
            requests=self.requests,
            bytes=self.bytes,
            embedding_inputs=self.embedding_inputs,
        )


class _Splitter:
    def __init__(self, workdir: Path, endpoint: str, limits: ShardLimits, max_problems: int) -> None:
        self.workdir = workdir
        self.endpoint = normalize_endpoint(endpoint)
        # What the endpoint counts against the per-batch input limit (embedding inputs); None: unknown endpoint.
        self.spec: Endpoint | None = endpoint_spec(self.endpoint)
        self.limits = limits
        # The validator's line rules, per line, for an input of any size and of several models.
        self.rules = LineChecker(
            endpoint=self.endpoint,
            max_requests=sys.maxsize,
            max_bytes=sys.maxsize,
            max_problems=max_problems,
            on_request=self.take,
        )
        self.rules.ids = _Forgetful()
        self.request: Mapping[str, Any] | None = None
        self.open: OrderedDict[str | None, _Shard] = OrderedDict()
        self.closed: list[ShardInfo] = []
        self.paths: list[Path] = []
        self.leading_ids = True
        self.db = open_index(workdir / "ids.sqlite")
        self.db.execute("CREATE TABLE ids (custom_id TEXT NOT NULL, line_no INTEGER NOT NULL)")
        self.pending: list[tuple[str, int]] = []
        self.writing = True

    def take(self, line_no: int, request: Mapping[str, Any]) -> None:
        self.request = request
        self.rules.model = None  # every model is welcome: each gets shards of its own

    def read(self, stream: IO[Any]) -> None:
        for raw in iter_bounded_lines(stream, self.limits.max_bytes):
            if isinstance(raw, int):
                self.oversized(raw)
            else:
                self.line(raw)

    def oversized(self, size: int) -> None:
        """A line no shard can hold: reported (the input fails, so its bytes need no hash)."""
        rules = self.rules
        rules.lines += 1
        rules.requests += 1
        rules.bytes += size
        self.too_large(rules.lines, "")

    def too_large(self, line_no: int, why: str) -> None:
        """Report a line no shard can hold; ``why`` says what made it too large, when not its bytes alone."""
        self.stop_writing()
        self.rules.add(
            line_no,
            "request_too_large",
            f"the line is over {self.limits.max_bytes:,} bytes{why}, more than one batch file may hold",
        )

    def line(self, raw: bytes) -> None:
        rules = self.rules
        self.request = None
        rules.feed(raw)
        request = self.request
        if request is None:
            return
        line_no = rules.lines
        custom_id = request.get("custom_id")
        if isinstance(custom_id, str) and custom_id:
            self.pending.append((custom_id, line_no))
            if len(self.pending) >= _ID_FLUSH:
                self.flush_ids()
            if self.leading_ids and leading_custom_id(raw) != custom_id:
                self.leading_ids = False
        body = request.get("body")
        inputs = self.spec.inputs(body) if self.spec is not None and isinstance(body, Mapping) else 0
        if inputs > self.limits.max_embedding_inputs:
            rules.add(
                line_no,
                "too_many_embedding_inputs",
                f"the request has {inputs:,} embedding inputs, more than one batch may hold "
                f"({self.limits.max_embedding_inputs:,})",
            )
        if not raw.endswith(b"\n"):
            raw += b"\n"  # the input's last line: every line of a shard ends in one
            if len(raw) > self.limits.max_bytes:
                self.too_large(line_no, " with the newline a shard line needs")
        if rules.problems:
            self.stop_writing()
            return
        model = body.get("model") if isinstance(body, Mapping) else None
        self.shard_for(model if isinstance(model, str) else None, line_no, len(raw), inputs).add(line_no, raw, inputs)

    def shard_for(self, model: str | None, line_no: int, size: int, inputs: int) -> _Shard:
        shard = self.open.get(model)
        if shard is not None:
            self.open.move_to_end(model)
            if shard.fits(size, inputs, self.limits):
                return shard
            self.close(model)
        if len(self.open) >= MAX_OPEN_SHARDS:
            self.close(next(iter(self.open)))
        index = len(self.paths)
        path = self.workdir / f"shard-{index:05d}.jsonl"
        self.paths.append(path)
        shard = self.open[model] = _Shard(index, model, path, line_no)
        return shard

    def close(self, model: str | None) -> None:
        self.closed.append(self.open.pop(model).close())

    def stop_writing(self) -> None:
        """The input is invalid: stop writing shards (the check goes on, to report every problem)."""
        if self.writing:
            self.writing = False
            self.discard()

    def discard(self) -> None:
        for shard in self.open.values():
            shard.out.close()
        self.open.clear()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def flush_ids(self) -> None:
        self.db.executemany("INSERT INTO ids VALUES (?, ?)", self.pending)
        self.pending.clear()

    def duplicates(self) -> None:
        self.flush_ids()
        self.db.execute("CREATE INDEX ids_by_custom_id ON ids (custom_id, line_no)")
        rows = self.db.execute(
            "SELECT custom_id, line_no, MIN(line_no) OVER (PARTITION BY custom_id) FROM ids WHERE custom_id IN "
            "(SELECT custom_id FROM ids GROUP BY custom_id HAVING COUNT(*) > 1) ORDER BY line_no"
        )
        for custom_id, line_no, first in rows:
            if line_no != first:
                self.stop_writing()
                shown = custom_id if len(custom_id) <= 60 else custom_id[:57] + "..."
                message = f"duplicate custom_id {shown!r} (first seen on line {first})"
                self.rules.add(line_no, "duplicate_custom_id", message)


def split_input(
    stream: IO[Any],
    workdir: str | os.PathLike[str],
    *,
    endpoint: str,
    limits: ShardLimits,
    source: str,
    max_problems: int = 100,
) -> SplitInput:
    """Check ``stream`` line by line and write its requests into shard files under ``workdir``.

    :param stream: the input, opened in binary, read from its current position.
    :param workdir: an existing folder for the shard files and the id index (the caller removes it).
    :param endpoint: the batches' endpoint; every line's ``url`` must match it.
    :param limits: the most one shard may hold.
    :param source: the input's name, for messages and the plan.
    :param max_problems: problems collected before the check stops.
    :raises BatchInputError: listing every problem (1-based input line and code); no shard is kept then.
    """
    splitter = _Splitter(Path(workdir), endpoint, limits, max_problems)
    rules = splitter.rules
    try:
        try:
            splitter.read(stream)
            rules.finish()
            splitter.duplicates()
        except StopCheck:
            pass
        finally:
            splitter.db.close()
        if rules.problems:
            splitter.discard()
            problems = sorted(rules.problems, key=lambda p: (p.line is not None, p.line or 0))
            raise BatchInputError(source, problems, truncated=rules.truncated)
        for model in list(splitter.open):
            splitter.close(model)
    except BaseException:
        splitter.discard()
        raise
    shards = sorted(splitter.closed, key=lambda shard: shard.index)
    plan = JobPlan(
        source=source,
        sha256=rules.hasher.hexdigest(),
        requests=rules.requests,
        bytes=rules.bytes,
        endpoint=splitter.endpoint,
        limits=limits,
        leading_ids=splitter.leading_ids,
        shards=tuple(shards),
    )
    return SplitInput(plan=plan, paths=tuple(splitter.paths), estimator=rules.estimator)
