"""Merge the shard batches' output and error files into one output and one error file, in input order.

Results come back in any order, shard by shard. Two on-disk indexes (SQLite) put them back in order: the
input's ``line -> custom_id`` (read again from the input, which must not have changed since the split) and
the results' ``custom_id -> (file, offset, length)``. One ordered join then copies every result line from
the local result files into place. Memory stays small whatever the job's size; nothing holds rows.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from airflow_provider_openai_batch.error_codes import (
    DEADLINE_EXCEEDED,
    MISSING_RESULT,
    LineKind,
    classify_error,
    classify_line,
    resubmitted_within_try,
)
from airflow_provider_openai_batch.job.ids import leading_custom_id, result_custom_id
from airflow_provider_openai_batch.job.plan import JobPlan
from airflow_provider_openai_batch.job.split import iter_bounded_lines, open_index

__all__ = [
    "DEADLINE_EXCEEDED",
    "MISSING_RESULT",
    "InputChangedError",
    "MergeStats",
    "Overdue",
    "ResultFile",
    "merge_results",
]
_FLUSH = 20_000
_MAX_CODES = 50


class InputChangedError(ValueError):
    """The input is not the one that was split, so its lines cannot be matched with the results."""


@dataclass(frozen=True)
class ResultFile:
    """A shard batch's output or error file, downloaded.

    :param path: the local copy.
    :param ok: ``True`` for an output file (answers), ``False`` for an error file.
    """

    path: Path
    ok: bool
    #: the file of a batch cancelled at the job's deadline: its ``batch_cancelled`` lines are ``deadline_exceeded``.
    overdue: bool = False


class Overdue:
    """The input lines the job's deadline left unrun: in the line ranges of the shards whose batch was cancelled
    at the deadline or that were never submitted.

    :param ranges: ``(first_line, last_line)`` of those shards.
    :param message: the error message of their lines.
    """

    def __init__(self, ranges: Sequence[tuple[int, int]], message: str) -> None:
        merged: list[list[int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._firsts = [first for first, _ in merged]
        self._lasts = [last for _, last in merged]
        self.message = message

    def covers(self, line_no: int) -> bool:
        at = bisect.bisect_right(self._firsts, line_no) - 1
        return at >= 0 and line_no <= self._lasts[at]

    def line(self, custom_id: str) -> bytes:
        """The error line written for an input line the deadline left unrun."""
        error = {"code": DEADLINE_EXCEEDED, "message": self.message}
        line = {"id": None, "custom_id": custom_id, "response": None, "error": error}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class MergeStats:
    """What the merge wrote.

    :param output_lines: answered input lines, in the output file.
    :param error_lines: failed or unanswered input lines, in the error file.
    :param missing: input lines that had no result at all (each written to the error file).
    :param unexpected: result lines whose ``custom_id`` is not in the input (left out, counted).
    :param error_codes: error file lines by error code (``missing_result`` for missing ones).
    :param retryable: error file lines a resubmission round of this try runs again (see
        :func:`~airflow_provider_openai_batch.error_codes.resubmitted_within_try`).
    :param retry_lines: of those, the input lines written to the ``retry`` file.
    :param unrun: error file lines that never ran (expired, cancelled, missing, stopped by the deadline).
    :param inflight: lines without an answer that a running batch holds (see ``inflight``).
    """

    output_lines: int = 0
    output_bytes: int = 0
    error_lines: int = 0
    error_bytes: int = 0
    missing: int = 0
    unexpected: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    retryable: int = 0
    retry_lines: int = 0
    unrun: int = 0
    inflight: int = 0

    def count_code(self, code: str) -> None:
        if code in self.error_codes or len(self.error_codes) < _MAX_CODES:
            self.error_codes[code] = self.error_codes.get(code, 0) + 1
        else:
            self.error_codes["other"] = self.error_codes.get("other", 0) + 1


def _input_id(raw: bytes, fast: bool) -> str:
    if fast:
        custom_id = leading_custom_id(raw)
        if custom_id is not None:
            return custom_id
    data = json.loads(raw)
    value = data.get("custom_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _index_input(db: Any, stream: IO[Any], plan: JobPlan) -> None:
    db.execute("CREATE TABLE input (line_no INTEGER PRIMARY KEY, custom_id TEXT NOT NULL)")
    hasher = hashlib.sha256()
    pending: list[tuple[int, str]] = []
    line_no = 0
    for raw in iter_bounded_lines(stream, plan.limits.max_bytes):
        if isinstance(raw, int):  # a line the split never accepted: the input changed
            hasher.update(b"\0" * raw)
            continue
        hasher.update(raw)
        line_no += 1
        with contextlib.suppress(ValueError):  # a changed line: the hash below says so
            pending.append((line_no, _input_id(raw, plan.leading_ids)))
        if len(pending) >= _FLUSH:
            db.executemany("INSERT INTO input VALUES (?, ?)", pending)
            pending.clear()
    db.executemany("INSERT INTO input VALUES (?, ?)", pending)
    if hasher.hexdigest() != plan.sha256:
        raise InputChangedError(
            f"{plan.source} changed since it was split into batches (SHA-256 {hasher.hexdigest()[:12]}..., was "
            f"{plan.sha256[:12]}...): its lines cannot be matched with the results. Keep a job's input unchanged "
            "until the job ends."
        )


def _index_inflight(db: Any, inputs: Sequence[Path], fast: bool) -> None:
    db.execute("CREATE TABLE inflight (custom_id TEXT PRIMARY KEY) WITHOUT ROWID")
    for path in inputs:
        pending: list[tuple[str]] = []
        with open(path, "rb") as stream:
            for raw in stream:
                if raw.strip():
                    with contextlib.suppress(ValueError):
                        pending.append((_input_id(raw, fast),))
                if len(pending) >= _FLUSH:
                    db.executemany("INSERT OR IGNORE INTO inflight VALUES (?)", pending)
                    pending.clear()
        db.executemany("INSERT OR IGNORE INTO inflight VALUES (?)", pending)


def _index_results(db: Any, results: Sequence[ResultFile], stats: MergeStats) -> None:
    # The best result of each line wins (answered > final error > passing error > unrun, see LineKind), and of
    # two of one kind the later file: ``results`` come in the order their batches were created.
    db.execute(
        "CREATE TABLE result (custom_id TEXT PRIMARY KEY, src INTEGER, off INTEGER, len INTEGER, kind INTEGER) "
        "WITHOUT ROWID"
    )
    upsert = (
        "INSERT INTO result VALUES (?, ?, ?, ?, ?) ON CONFLICT (custom_id) DO UPDATE SET "
        "src = excluded.src, off = excluded.off, len = excluded.len, kind = excluded.kind "
        "WHERE excluded.kind >= result.kind"
    )
    for src, result in enumerate(results):
        pending: list[tuple[str, int, int, int, int]] = []
        offset = 0
        with open(result.path, "rb") as stream:
            for raw in stream:
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                custom_id = result_custom_id(raw)
                if custom_id is None:
                    stats.unexpected += 1
                    continue
                pending.append((custom_id, src, start, len(raw), int(classify_line(raw, output=result.ok))))
                if len(pending) >= _FLUSH:
                    db.executemany(upsert, pending)
                    pending.clear()
        db.executemany(upsert, pending)


def _copy_lines(db: Any, stream: IO[Any], plan: JobPlan, out: IO[bytes], numbers: IO[bytes] | None) -> int:
    """Copy the input lines listed in the ``retry`` table to ``out``, in order; returns how many."""
    wanted = (row[0] for row in db.execute("SELECT line_no FROM retry ORDER BY line_no"))  # streamed
    target = next(wanted, None)
    copied = 0
    for line_no, raw in enumerate(iter_bounded_lines(stream, plan.limits.max_bytes), start=1):
        if target is None:
            break
        if line_no != target or isinstance(raw, int):
            continue
        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
        if numbers is not None:
            numbers.write(line_no.to_bytes(8, "little"))
        copied += 1
        target = next(wanted, None)
    return copied


def missing_line(custom_id: str) -> bytes:
    """The error line written for an input line that no batch answered."""
    error = {
        "code": MISSING_RESULT,
        "message": "no shard batch returned a result for this request (its batch failed, or ended before it ran)",
    }
    line = {"id": None, "custom_id": custom_id, "response": None, "error": error}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def merge_results(
    input_stream: IO[Any],
    results: Sequence[ResultFile],
    output: IO[bytes],
    errors: IO[bytes],
    *,
    plan: JobPlan,
    workdir: str | os.PathLike[str],
    retry: IO[bytes] | None = None,
    retry_lines: IO[bytes] | None = None,
    overdue: Overdue | None = None,
    inflight: Sequence[Path] = (),
    new_try: bool = False,
) -> MergeStats:
    """Write every input line's result to ``output`` (answers) or ``errors`` (failures, no result), in input order.

    :param input_stream: the job's input again, opened in binary at its start.
    :param results: the shard batches' downloaded output and error files, in any order.
    :param output: where answers go, one line per answered input line, in input order.
    :param errors: where failures go (the batch's error line, or a ``missing_result`` line), in input order.
    :param plan: the job's plan (input hash and how to read ids).
    :param workdir: an existing folder for the index (the caller removes it).
    :param retry: where the input lines of retryable failures go, in input order, as a new input (the input
        stream is read a second time for them, from its start: it must be seekable).
    :param retry_lines: with ``retry``: the input line number of each of them, as 8-byte integers.
    :param overdue: what the job's deadline left unrun: those lines' ``batch_cancelled`` or missing results
        become ``deadline_exceeded`` lines (never retried).
    :param inflight: the input files of the job's batches still running: their lines are in flight, never
        written to ``retry`` (counted in ``stats.inflight``).
    :param new_try: the retry rule of a new try (a retry or a clear) rather than of a resubmission round: every
        line not answered and not failed for good is run again, whatever left it unrun.
    :raises InputChangedError: when the input is not the one that was split.
    """
    stats = MergeStats()
    db = open_index(Path(workdir) / "merge.sqlite")
    fds = [os.open(result.path, os.O_RDONLY) for result in results]
    try:
        _index_input(db, input_stream, plan)
        _index_results(db, results, stats)
        _index_inflight(db, inflight, plan.leading_ids)
        answered = 0
        db.execute("CREATE TABLE retry (line_no INTEGER PRIMARY KEY)")
        again: list[tuple[int]] = []
        rows = db.execute(
            "SELECT i.line_no, i.custom_id, r.src, r.off, r.len, r.kind, f.custom_id IS NOT NULL FROM input i "
            "LEFT JOIN result r ON r.custom_id = i.custom_id LEFT JOIN inflight f ON f.custom_id = i.custom_id "
            "ORDER BY i.line_no"
        )
        for line_no, custom_id, src, offset, length, kind, flying in rows:
            if src is None:
                raw = missing_line(custom_id)
                stats.missing += 1
            else:
                answered += 1
                raw = os.pread(fds[src], length, offset)
                if not raw.endswith(b"\n"):
                    raw += b"\n"
            if kind == LineKind.ANSWERED:
                output.write(raw)
                stats.output_lines += 1
                stats.output_bytes += len(raw)
                continue
            code, line_kind = (MISSING_RESULT, LineKind.UNRUN) if src is None else classify_error(raw)
            if overdue is not None and (
                (src is None and overdue.covers(line_no))
                or (src is not None and results[src].overdue and code == "batch_cancelled")
            ):
                raw, code, line_kind = overdue.line(custom_id), DEADLINE_EXCEEDED, LineKind.UNRUN
            errors.write(raw)
            stats.error_lines += 1
            stats.error_bytes += len(raw)
            stats.count_code(code)
            if line_kind is LineKind.UNRUN:
                stats.unrun += 1
            run_again = line_kind is not LineKind.FINAL if new_try else resubmitted_within_try(code, line_kind)
            if flying:
                stats.inflight += 1
            elif run_again:
                stats.retryable += 1
                again.append((line_no,))
                if len(again) >= _FLUSH:
                    db.executemany("INSERT INTO retry VALUES (?)", again)
                    again.clear()
        db.executemany("INSERT INTO retry VALUES (?)", again)
        (indexed,) = db.execute("SELECT COUNT(*) FROM result").fetchone()
        stats.unexpected += indexed - answered
        if retry is not None and stats.retryable:
            input_stream.seek(0)
            stats.retry_lines = _copy_lines(db, input_stream, plan, retry, retry_lines)
    finally:
        for fd in fds:
            os.close(fd)
        db.close()
    return stats
