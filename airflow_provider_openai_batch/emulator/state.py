"""In-memory state of the emulator (files, batches, counters) and the batch lifecycle.

Everything is guarded by one re-entrant lock (:attr:`Store.lock`). The lifecycle is evaluated lazily:
whenever a batch is read, it is moved along the clock (see :meth:`Store._advance`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from . import results
from .clock import Clock

JSON = dict[str, Any]

#: "200 MB" batch input limit, read as 200 MiB.
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
#: Any other upload: 512 MiB.
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BATCH_ERRORS_REPORTED = 100
BATCH_WINDOW_SECONDS = 86_400
DEFAULT_FILE_TTL_SECONDS = 30 * 86_400
MIN_EXPIRES_SECONDS = 3_600
MAX_EXPIRES_SECONDS = 2_592_000
SLOW_FACTOR = 20

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
#: Batch metadata key that steers the emulator; value is a comma-separated list of flags.
CONTROL_METADATA_KEY = "emulator"
CONTROL_FLAGS = ("hold", "expire", "slow", "token_limit")


def _percent_flag(flags: set[str], name: str) -> float | None:
    """The percentage N of a ``name=N`` flag (0 to 100; another value is a 400 at create), or ``None``."""
    for flag in flags:
        if flag.startswith(f"{name}="):
            try:
                percent = float(flag.removeprefix(f"{name}="))
            except ValueError:
                percent = -1.0
            if not 0.0 <= percent <= 100.0:
                message = f"metadata.emulator: {flag!r} needs a percentage from 0 to 100"
                raise ApiError(400, message, param="metadata", code="invalid_value")
            return percent
    return None


def _hold_share(flags: set[str]) -> float | None:
    """The share of its requests a held batch finishes: ``hold`` is half, ``stall=N`` is N percent (0-100)."""
    percent = _percent_flag(flags, "stall")
    if percent is not None:
        return percent / 100.0
    return 0.5 if "hold" in flags else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ApiError(Exception):
    """An OpenAI-style error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> JSON:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _new_file_id(length: int | None = None) -> str:
    return _new_id("file-", uuid.uuid4().hex[:22], length)


def _new_batch_id(length: int | None = None) -> str:
    return _new_id("batch_", uuid.uuid4().hex, length)


def _new_id(prefix: str, core: str, length: int | None) -> str:
    """``prefix + core``; with ``length``, an id of exactly that many characters, as a gateway's long ids are
    (LiteLLM's are about 330 characters of URL-safe base64): ``prefix + core`` and random URL-safe characters."""
    if length is None:
        return prefix + core
    return (prefix + core + secrets.token_urlsafe(length))[:length]


def normalize_endpoint(endpoint: str) -> str:
    """``/chat/completions`` (Azure style) -> ``/v1/chat/completions``."""
    return endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint


@dataclass
class FileRecord:
    id: str
    seq: int
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: Path

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass(frozen=True)
class RequestInfo:
    custom_id: str
    line: int
    offset: int
    length: int
    ok: bool
    input_tokens: int
    output_tokens: int


@dataclass
class BatchRecord:
    id: str
    seq: int
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_seconds: int | None
    input_path: Path | None
    created_time: float
    flags: frozenset[str]
    #: ``hold`` (0.5) or ``stall=N`` (N/100): stays ``in_progress`` with at most this share of its requests done.
    hold_share: float | None = None
    #: ``expire=N``: at the end of ``in_progress`` goes ``expired`` with the last N percent of its requests undone.
    expire_percent: float | None = None
    #: Keys the per-line 500 draw: the input's SHA-256 and how many earlier batches had the same input.
    draw: str = ""
    status: str = "validating"
    since: float = 0.0
    stamps: dict[str, int | None] = field(default_factory=dict)
    model: str | None = None
    errors: list[JSON] | None = None
    requests: list[RequestInfo] | None = None  # in processing (= output) order
    ok_prefix: list[int] = field(default_factory=lambda: [0])
    in_tok_prefix: list[int] = field(default_factory=lambda: [0])
    out_tok_prefix: list[int] = field(default_factory=lambda: [0])
    frozen_done: int = 0
    result_created: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    enqueued_tokens: int = 0  # input tokens of its requests, counted against the model's enqueued limit
    running_from: float | None = None  # when it entered in_progress
    running_until: float | None = None  # when it left in_progress


_STAMP_KEYS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class Store:
    """All emulator state. Public methods take :attr:`lock` themselves."""

    def __init__(self, clock: Clock, data_dir: Path, phase_seconds: float) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.phase_seconds = float(phase_seconds)
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.tmp_dir = data_dir / "tmp"
        self.batch_dir = data_dir / "batches"
        for d in (self.files_dir, self.tmp_dir, self.batch_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, FileRecord] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._seq = 0
        self.route_counts: dict[str, int] = {}
        self.total_requests = 0
        self.connections = 0
        self.batches_created = 0
        self.files_uploaded = 0
        self.in_flight = 0
        #: Batches created so far per input content (SHA-256): a batch's per-line 500 draw is keyed by its
        #: input's digest and this count, so a line sent again draws again, even in a file like the last one.
        self._inputs_seen: dict[str, int] = {}
        #: Enqueued-token limit per model (``None``: unlimited): a batch whose input tokens, added to those of
        #: the model's batches ``in_progress`` when it is validated, exceed it fails with ``token_limit_exceeded``.
        self.enqueued_token_limit: int | None = None
        #: Enqueued-request limit per model (``None``: unlimited): a batch whose requests, added to those of the
        #: model's batches ``in_progress`` when it is validated, exceed it fails with ``request_limit_exceeded``.
        self.enqueued_request_limit: int | None = None
        #: The most batches of each model seen ``in_progress`` at once (for tests of client-side admission).
        self.peak_in_progress: dict[str, int] = {}
        #: ``None``: ids as OpenAI's; N: every new file and batch id is N characters, as a gateway's may be (set
        #: it with ``EmulatorServer.set_id_length``); files are then stored under their ids' SHA-256.
        self.id_length: int | None = None

    # ------------------------------------------------------------------ helpers
    def _disk_name(self, id_: str) -> str:
        """Where an id's data is stored: the id itself, or its SHA-256 when ids are long (no file names)."""
        return id_ if self.id_length is None else hashlib.sha256(id_.encode()).hexdigest()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def reset_counters(self) -> None:
        with self.lock:
            self.route_counts = {}
            self.total_requests = 0
            self.connections = 0
            self.batches_created = 0
            self.files_uploaded = 0

    def count_request(self, route_key: str) -> None:
        with self.lock:
            self.total_requests += 1
            self.route_counts[route_key] = self.route_counts.get(route_key, 0) + 1

    def begin_request(self) -> None:
        with self.lock:
            self.in_flight += 1

    def end_request(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def count_connection(self) -> None:
        with self.lock:
            self.connections += 1

    def new_tmp_path(self) -> Path:
        return self.tmp_dir / f"upload-{uuid.uuid4().hex}"

    # ------------------------------------------------------------------ files
    def add_file(
        self, tmp_path: Path, *, filename: str, purpose: str, size: int, expires_seconds: int | None
    ) -> FileRecord:
        with self.lock:
            created = int(self.clock.now())
            if expires_seconds is not None:
                expires_at: int | None = created + expires_seconds
            elif purpose == "batch":
                expires_at = created + DEFAULT_FILE_TTL_SECONDS
            else:
                expires_at = None
            file_id = _new_file_id(self.id_length)
            path = self.files_dir / self._disk_name(file_id)
            os.replace(tmp_path, path)
            rec = FileRecord(file_id, self._next_seq(), filename, purpose, size, created, expires_at, path)
            self.files[file_id] = rec
            if purpose != "batch_output":
                self.files_uploaded += 1
            return rec

    def get_file(self, file_id: str) -> FileRecord:
        with self.lock:
            rec = self.files.get(file_id)
            if rec is None:
                raise ApiError(404, f"No such File object: {file_id}", param="id")
            return rec

    def delete_file(self, file_id: str) -> JSON:
        with self.lock:
            rec = self.get_file(file_id)
            del self.files[file_id]
            rec.path.unlink(missing_ok=True)
            return {"id": file_id, "object": "file", "deleted": True}

    def list_files(self, *, purpose: str | None, limit: int, order: str, after: str | None) -> JSON:
        with self.lock:
            recs = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
            recs.sort(key=lambda f: (f.created_at, f.seq), reverse=(order == "desc"))
            page = self._page(recs, after, limit)
            return self._list_json([f.to_json() for f in page[0]], page[1])

    @staticmethod
    def _page(items: list[Any], after: str | None, limit: int) -> tuple[list[Any], bool]:
        start = 0
        if after:
            ids = [i.id for i in items]
            if after not in ids:
                return [], False
            start = ids.index(after) + 1
        chunk = items[start : start + limit]
        return chunk, start + limit < len(items)

    @staticmethod
    def _list_json(data: list[JSON], has_more: bool) -> JSON:
        return {
            "object": "list",
            "data": data,
            # Strings even for an empty page: the specification types them as strings (and ListFilesResponse
            # requires them); never null.
            "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "",
            "has_more": has_more,
        }

    def _write_result_file(self, batch: BatchRecord, kind: str, lines: Iterable[JSON], when: int) -> str:
        tmp = self.new_tmp_path()
        size = 0
        with open(tmp, "wb") as fh:
            for obj in lines:
                data = (json.dumps(obj) + "\n").encode("utf-8")
                fh.write(data)
                size += len(data)
        file_id = _new_file_id(self.id_length)
        path = self.files_dir / self._disk_name(file_id)
        os.replace(tmp, path)
        ttl = batch.output_expires_seconds or DEFAULT_FILE_TTL_SECONDS
        rec = FileRecord(
            file_id, self._next_seq(), f"{batch.id}_{kind}.jsonl", "batch_output", size, when, when + ttl, path
        )
        self.files[file_id] = rec
        return file_id

    # ------------------------------------------------------------------ batches
    def create_batch(self, body: Any, *, counted: bool = True, azure: bool = False) -> JSON:
        """Create a batch as the service does; ``azure``: the request came through the Azure layout, whose
        endpoints may also be written without ``/v1`` (OpenAI answers those with a 400)."""
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        allowed = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
        for key in body:
            if key not in allowed:
                raise ApiError(400, f"Unrecognized request argument supplied: {key}")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if body.get(key) is None:
                raise ApiError(
                    400, f"Missing required parameter: '{key}'.", param=key, code="missing_required_parameter"
                )
            if not isinstance(body[key], str):
                raise ApiError(
                    400,
                    f"Invalid type for '{key}': expected a string, but got {type(body[key]).__name__} instead.",
                    param=key,
                    code="invalid_type",
                )
        endpoint: str = body["endpoint"]
        if (normalize_endpoint(endpoint) if azure else endpoint) not in BATCH_ENDPOINTS:
            raise ApiError(
                400,
                f"Invalid value: '{endpoint}'. Supported values are: "
                + ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS)
                + ".",
                param="endpoint",
                code="invalid_value",
            )
        if body["completion_window"] != "24h":
            raise ApiError(
                400,
                f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        metadata = _validate_metadata(body.get("metadata"))
        expires_seconds = _validate_expires_after(body.get("output_expires_after"), "output_expires_after")
        with self.lock:
            input_file_id: str = body["input_file_id"]
            rec = self.files.get(input_file_id)
            if rec is None:
                raise ApiError(
                    400, f"No such File object: {input_file_id}", param="input_file_id", code="invalid_value"
                )
            if rec.purpose != "batch":
                raise ApiError(
                    400,
                    f"The input file {input_file_id} must be uploaded with purpose 'batch' "
                    f"(it has purpose '{rec.purpose}').",
                    param="input_file_id",
                    code="invalid_value",
                )
            flags = set()
            if metadata and CONTROL_METADATA_KEY in metadata:
                flags = {f.strip().lower() for f in metadata[CONTROL_METADATA_KEY].split(",")}
            hold_share = _hold_share(flags)
            expire_percent = _percent_flag(flags, "expire")
            content = _file_digest(rec.path)
            attempt = self._inputs_seen.get(content, 0)
            self._inputs_seen[content] = attempt + 1
            batch_id = _new_batch_id(self.id_length)
            link = self.batch_dir / f"{self._disk_name(batch_id)}.input.jsonl"
            try:
                os.link(rec.path, link)
            except OSError:
                shutil.copyfile(rec.path, link)
            now = self.clock.now()
            batch = BatchRecord(
                id=batch_id,
                seq=self._next_seq(),
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window="24h",
                metadata=metadata,
                output_expires_seconds=expires_seconds,
                input_path=link,
                created_time=now,
                flags=frozenset(flags & set(CONTROL_FLAGS)),
                hold_share=hold_share,
                expire_percent=expire_percent,
                draw=f"{content[:16]}:{attempt}",
                since=now,
                stamps=dict.fromkeys(_STAMP_KEYS),
            )
            self._batches[batch_id] = batch
            if counted:
                self.batches_created += 1
            return self._batch_json(batch, now)

    def _get(self, batch_id: str, now: float) -> BatchRecord:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        self._advance(batch, now)
        return batch

    def get_batch(self, batch_id: str) -> JSON:
        with self.lock:
            now = self.clock.now()
            return self._batch_json(self._get(batch_id, now), now)

    def has_batch(self, batch_id: str) -> bool:
        with self.lock:
            return batch_id in self._batches

    def all_batches(self) -> list[JSON]:
        """Every batch (advanced to now), newest first."""
        with self.lock:
            now = self.clock.now()
            out = []
            for b in sorted(self._batches.values(), key=lambda b: b.seq, reverse=True):
                self._advance(b, now)
                out.append(self._batch_json(b, now))
            return out

    def list_batches(self, *, after: str | None, limit: int) -> JSON:
        with self.lock:
            now = self.clock.now()
            recs = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
            page, has_more = self._page(recs, after, limit)
            data = []
            for b in page:
                self._advance(b, now)
                data.append(self._batch_json(b, now))
            return self._list_json(data, has_more)

    def cancel_batch(self, batch_id: str) -> JSON:
        with self.lock:
            now = self.clock.now()
            b = self._get(batch_id, now)
            if b.status in TERMINAL_STATUSES:
                raise ApiError(409, f"Cannot cancel a batch with status '{b.status}'.")
            if b.status != "cancelling":
                b.frozen_done = self._done(b, now)
                if b.requests is None:
                    b.requests = []
                b.status = "cancelling"
                b.since = now
                if b.running_from is not None and b.running_until is None:
                    b.running_until = now
                b.stamps["cancelling_at"] = int(now)
            return self._batch_json(b, now)

    def expire_batch(self, batch_id: str) -> JSON:
        with self.lock:
            now = self.clock.now()
            b = self._get(batch_id, now)
            if b.status not in TERMINAL_STATUSES:
                done = self._done(b, now)
                if b.requests is None:
                    b.requests = []
                self._finish(b, "expired", now, done)
            return self._batch_json(b, now)

    # ------------------------------------------------------------------ lifecycle
    def _phase(self, b: BatchRecord) -> float:
        return self.phase_seconds * (SLOW_FACTOR if "slow" in b.flags else 1)

    def _done(self, b: BatchRecord, now: float) -> int:
        total = len(b.requests or [])
        if b.status == "in_progress":
            d = self._phase(b)
            frac = 1.0 if d <= 0 else min(1.0, max(0.0, (now - b.since) / d))
            done = int(frac * total)
            if b.hold_share is not None:
                done = min(done, int(total * b.hold_share))
            elif self._expires(b):
                done = min(done, self._expire_done(b, total))
            return done
        if b.status in ("finalizing", "completed"):
            return total
        if b.status in ("cancelling", "cancelled", "expired"):
            return b.frozen_done
        return 0

    @staticmethod
    def _expires(b: BatchRecord) -> bool:
        return "expire" in b.flags or b.expire_percent is not None

    @staticmethod
    def _expire_done(b: BatchRecord, total: int) -> int:
        """Requests an expiring batch finishes: half with ``expire``; with ``expire=N`` all but the last
        ``floor(total * N / 100)`` in processing order (a draw by ``sha256(custom_id)``), so a round of fewer
        than ``100 / N`` requests finishes every one."""
        if b.expire_percent is None:
            return total // 2
        return total - int(total * b.expire_percent // 100)

    def _advance(self, b: BatchRecord, now: float) -> None:
        while True:
            d = self._phase(b)
            t = b.since + d
            if b.status == "validating":
                if now < t:
                    return
                self._validate(b, t)
            elif b.status == "in_progress":
                deadline = b.created_time + BATCH_WINDOW_SECONDS
                if b.hold_share is not None:
                    t = float("inf")
                if deadline < t and now >= deadline:
                    self._finish(b, "expired", deadline, self._done(b, deadline))
                    return
                if now < t:
                    return
                if self._expires(b):
                    self._finish(b, "expired", t, self._expire_done(b, len(b.requests or [])))
                    return
                b.status, b.since = "finalizing", t
                b.running_until = t
                b.stamps["finalizing_at"] = int(t)
            elif b.status == "finalizing":
                if now < t:
                    return
                self._finish(b, "completed", t, len(b.requests or []))
                return
            elif b.status == "cancelling":
                if now < t:
                    return
                self._finish(b, "cancelled", t, b.frozen_done)
                return
            else:
                return

    def _fail(self, b: BatchRecord, t: float, errors: list[JSON]) -> None:
        b.status, b.since = "failed", t
        b.stamps["failed_at"] = int(t)
        b.errors = errors[:MAX_BATCH_ERRORS_REPORTED]
        b.requests = []
        self._drop_input(b)

    def _drop_input(self, b: BatchRecord) -> None:
        if b.input_path is not None:
            b.input_path.unlink(missing_ok=True)
            b.input_path = None

    def _validate(self, b: BatchRecord, t: float) -> None:
        endpoint = normalize_endpoint(b.endpoint)
        errors: list[JSON] = []
        reqs: list[tuple[RequestInfo, str]] = []
        seen: set[str] = set()
        first_model: str | None = None
        count = 0

        def err(code: str, message: str, line: int | None, param: str | None = None) -> None:
            errors.append({"code": code, "message": message, "param": param, "line": line})

        if b.input_path is None or not b.input_path.exists():
            gone = {"code": "invalid_request", "message": "The input file is gone.", "param": None, "line": None}
            self._fail(b, t, [gone])
            return
        if "token_limit" in b.flags:
            full = {
                "code": "token_limit_exceeded",
                "message": "Enqueued token limit reached for this model in your organization. Please try again once "
                "some in_progress batches have been completed.",
                "param": None,
                "line": None,
            }
            self._fail(b, t, [full])
            return
        created = int(t)
        with open(b.input_path, "rb") as fh:
            offset = 0
            for line_no, raw in enumerate(fh, start=1):
                start, offset = offset, offset + len(raw)
                stripped = raw.strip()
                if not stripped:
                    continue
                count += 1
                if count > MAX_REQUESTS_PER_BATCH:
                    err(
                        "too_many_tasks",
                        f"The input file contains more than {MAX_REQUESTS_PER_BATCH} requests.",
                        None,
                    )
                    break
                try:
                    obj = json.loads(stripped)
                except ValueError:
                    err("invalid_json_line", "This line is not parseable as valid JSON.", line_no)
                    continue
                if not isinstance(obj, dict):
                    err("invalid_json_line", "This line is not a JSON object.", line_no)
                    continue
                missing = next((k for k in ("custom_id", "method", "url", "body") if k not in obj), None)
                if missing is not None:
                    err("invalid_request", f"Missing required field '{missing}'.", line_no, missing)
                    continue
                custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
                if not isinstance(custom_id, str) or not custom_id:
                    err("invalid_request", "Field 'custom_id' must be a non-empty string.", line_no, "custom_id")
                    continue
                if method != "POST":
                    err("invalid_request", "Field 'method' must be 'POST'.", line_no, "method")
                    continue
                if not isinstance(body, dict):
                    err("invalid_request", "Field 'body' must be a JSON object.", line_no, "body")
                    continue
                if custom_id in seen:
                    err(
                        "duplicate_custom_id",
                        f"The custom_id '{custom_id}' is used on more than one line; it must be unique.",
                        line_no,
                        "custom_id",
                    )
                    continue
                seen.add(custom_id)
                if not isinstance(url, str) or normalize_endpoint(url) != endpoint:
                    err(
                        "url_mismatch",
                        f"The URL '{url}' does not match the batch endpoint '{b.endpoint}'.",
                        line_no,
                        "url",
                    )
                    continue
                model = body.get("model")
                if isinstance(model, str):
                    if first_model is None:
                        first_model = model
                    elif model != first_model:
                        err(
                            "model_mismatch",
                            f"The model '{model}' differs from the model '{first_model}' of earlier lines; "
                            "a batch can use only one model.",
                            line_no,
                            "body.model",
                        )
                        continue
                if errors:
                    continue  # the batch fails anyway; don't compute results
                res = results.compute(
                    endpoint, body, created=created, batch_id=b.id, custom_id=custom_id, line=line_no, draw=b.draw
                )
                info = RequestInfo(custom_id, line_no, start, len(raw), res.ok, res.input_tokens, res.output_tokens)
                reqs.append((info, results.order_key(custom_id)))
        if not errors and not reqs:
            err("empty_batch", "The input file contains no requests.", None)
        if errors:
            self._fail(b, t, errors)
            return
        own = sum(r.input_tokens for r, _ in reqs)
        if self.enqueued_token_limit is not None or self.enqueued_request_limit is not None:
            self._validate_earlier(b, t)
        running = self._running(first_model, b, t) if first_model is not None else []
        over = self._over_enqueued_limit(first_model, running, own, len(reqs))
        if over is not None:
            self._fail(b, t, [over])
            return
        if first_model is not None:
            self.peak_in_progress[first_model] = max(self.peak_in_progress.get(first_model, 0), len(running) + 1)
        b.enqueued_tokens, b.running_from = own, t
        ordered = [r for r, _ in sorted(reqs, key=lambda p: p[1])]
        b.requests = ordered
        b.ok_prefix = [0, *accumulate(int(r.ok) for r in ordered)]
        b.in_tok_prefix = [0, *accumulate(r.input_tokens if r.ok else 0 for r in ordered)]
        b.out_tok_prefix = [0, *accumulate(r.output_tokens if r.ok else 0 for r in ordered)]
        b.model = first_model
        b.result_created = created
        b.status, b.since = "in_progress", t
        b.stamps["in_progress_at"] = created

    def _over_enqueued_limit(
        self, model: str | None, running: list[BatchRecord], tokens: int, requests: int
    ) -> JSON | None:
        """The error of a batch of ``model`` that would take its model's enqueued tokens or requests (those of
        the ``running`` batches plus its own) past a limit, else ``None``."""
        token_limit, request_limit = self.enqueued_token_limit, self.enqueued_request_limit
        if token_limit is not None and sum(o.enqueued_tokens for o in running) + tokens > token_limit:
            code, what, limit = "token_limit_exceeded", "token", token_limit
        elif request_limit is not None and sum(len(o.requests or ()) for o in running) + requests > request_limit:
            code, what, limit = "request_limit_exceeded", "request", request_limit
        else:
            return None
        return {
            "code": code,
            "message": f"Enqueued {what} limit reached for {model} in organization org-emulator. "
            f"Limit: {limit} enqueued {what}s. Please try again once some in_progress batches have been completed.",
            "param": None,
            "line": None,
        }

    def _validate_earlier(self, b: BatchRecord, t: float) -> None:
        """Validate first every batch whose validation ended before ``b``'s, as the service does: states are
        worked out lazily, when a batch is read, so without this a batch not yet read would be missing from the
        enqueued total and the limit would depend on the order in which clients poll. Only strictly earlier
        batches are validated, so the recursion through their own ``_validate`` ends."""
        mine = (t, b.created_time, b.id)
        for o in list(self._batches.values()):
            if o is not b and o.status == "validating" and (o.since + self._phase(o), o.created_time, o.id) < mine:
                self._advance(o, t)

    def _running(self, model: str, b: BatchRecord, t: float) -> list[BatchRecord]:
        """The other batches of ``model`` that are ``in_progress`` at time ``t``."""
        running = []
        for o in self._batches.values():
            if o is b or o.model != model or o.running_from is None or o.running_from > t:
                continue
            if o.status == "in_progress":
                self._advance(o, t)  # only moves on from in_progress: no validation recursion
            if o.running_until is None or o.running_until > t:
                running.append(o)
        return running

    def _read_line(self, fh: Any, r: RequestInfo) -> JSON:
        fh.seek(r.offset)
        obj: JSON = json.loads(fh.read(r.length))
        return obj

    def _finish(self, b: BatchRecord, status: str, t: float, done: int) -> None:
        if b.running_from is not None and b.running_until is None:
            b.running_until = t
        reqs = b.requests or []
        done = max(0, min(done, len(reqs)))
        when = int(t)
        endpoint = normalize_endpoint(b.endpoint)
        if reqs and b.input_path is not None:
            with open(b.input_path, "rb") as fh:

                def result_line(r: RequestInfo) -> JSON:
                    body = self._read_line(fh, r)["body"]
                    res = results.compute(
                        endpoint,
                        body,
                        created=b.result_created,
                        batch_id=b.id,
                        custom_id=r.custom_id,
                        line=r.line,
                        draw=b.draw,
                    )
                    return {
                        "id": results.line_id(b.id, r.custom_id),
                        "custom_id": r.custom_id,
                        "response": {
                            "status_code": res.status_code,
                            "request_id": results.line_request_id(b.id, r.custom_id),
                            "body": res.body,
                        },
                        "error": None,
                    }

                def unfinished_line(r: RequestInfo) -> JSON:
                    if status == "cancelled":
                        error = {
                            "code": "batch_cancelled",
                            "message": "This request was not executed because the batch was cancelled.",
                        }
                    else:
                        error = {
                            "code": "batch_expired",
                            "message": "This request could not be executed before the completion window expired.",
                        }
                    return {
                        "id": results.line_id(b.id, r.custom_id),
                        "custom_id": r.custom_id,
                        "response": None,
                        "error": error,
                    }

                finished = reqs[:done]
                if any(r.ok for r in finished):
                    b.output_file_id = self._write_result_file(
                        b, "output", (result_line(r) for r in finished if r.ok), when
                    )
                if done < len(reqs) or not all(r.ok for r in finished):
                    lines = [result_line(r) for r in finished if not r.ok]
                    b.error_file_id = self._write_result_file(
                        b, "error", [*lines, *(unfinished_line(r) for r in reqs[done:])], when
                    )
        b.frozen_done = done
        b.status, b.since = status, t
        b.stamps[f"{status}_at"] = when
        self._drop_input(b)

    def _batch_json(self, b: BatchRecord, now: float) -> JSON:
        reqs = b.requests or []
        total = len(reqs) if b.status != "validating" else 0
        done = self._done(b, now) if reqs else 0
        ok = b.ok_prefix[done] if reqs else 0
        failed = done - ok
        if b.status in ("cancelled", "expired"):
            failed = total - ok
        usage: JSON | None = None
        if ok:
            it, ot = b.in_tok_prefix[done], b.out_tok_prefix[done]
            usage = {
                "input_tokens": it,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": ot,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": it + ot,
            }
        created_at = int(b.created_time)
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": {"object": "list", "data": [dict(e) for e in b.errors]} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": b.completion_window,
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": created_at,
            "in_progress_at": b.stamps["in_progress_at"],
            "expires_at": created_at + BATCH_WINDOW_SECONDS,
            "finalizing_at": b.stamps["finalizing_at"],
            "completed_at": b.stamps["completed_at"],
            "failed_at": b.stamps["failed_at"],
            "expired_at": b.stamps["expired_at"],
            "cancelling_at": b.stamps["cancelling_at"],
            "cancelled_at": b.stamps["cancelled_at"],
            "request_counts": {"total": total, "completed": ok, "failed": failed},
            "usage": usage,
            "metadata": dict(b.metadata) if b.metadata is not None else None,
        }


def _validate_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"Invalid type for 'metadata': expected an object, but got {type(value).__name__} instead.",
            param="metadata",
            code="invalid_type",
        )
    if len(value) > 16:
        raise ApiError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, val in value.items():
        if len(key) > 64:
            raise ApiError(
                400,
                "Invalid 'metadata': string too long. Expected a key with maximum length 64, "
                f"but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(val, str):
            raise ApiError(
                400,
                f"Invalid type for 'metadata.{key}': expected a string, but got {type(val).__name__} instead.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(val) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length 512, "
                f"but got a string with length {len(val)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return dict(value)


def _validate_expires_after(value: Any, param: str, *, form: bool = False) -> int | None:
    """Validate ``{"anchor": "created_at", "seconds": 3600..2592000}``; return the seconds.

    ``form``: the values came as multipart form fields, which are always text; in JSON, ``seconds`` must be
    a number (the service answers a string with a 400).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"Invalid type for '{param}': expected an object, but got {type(value).__name__} instead.",
            param=param,
            code="invalid_type",
        )
    for key in value:
        if key not in ("anchor", "seconds"):
            raise ApiError(400, f"Unrecognized request argument supplied: {param}.{key}", param=f"{param}.{key}")
    for key in ("anchor", "seconds"):
        if key not in value:
            raise ApiError(
                400,
                f"Missing required parameter: '{param}.{key}'.",
                param=f"{param}.{key}",
                code="missing_required_parameter",
            )
    if value["anchor"] != "created_at":
        raise ApiError(
            400,
            f"Invalid value: '{value['anchor']}'. Supported values are: 'created_at'.",
            param=f"{param}.anchor",
            code="invalid_value",
        )
    seconds = value["seconds"]
    if form and isinstance(seconds, str) and seconds.strip().lstrip("-").isdigit():
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ApiError(
            400,
            f"Invalid type for '{param}.seconds': expected an integer.",
            param=f"{param}.seconds",
            code="invalid_type",
        )
    if not MIN_EXPIRES_SECONDS <= seconds <= MAX_EXPIRES_SECONDS:
        raise ApiError(
            400,
            f"Invalid '{param}.seconds': must be between {MIN_EXPIRES_SECONDS} and {MAX_EXPIRES_SECONDS}, "
            f"got {seconds}.",
            param=f"{param}.seconds",
            code="integer_out_of_range",
        )
    return seconds


def validate_form_expires_after(value: Any, param: str) -> int | None:
    """:func:`_validate_expires_after` for multipart form fields (text values)."""
    return _validate_expires_after(value, param, form=True)
