"""HTTP layer of the emulator: a ``ThreadingHTTPServer`` speaking the OpenAI Batch + Files wire format."""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from .clock import Clock, RealClock
from .faults import FaultRegistry, FaultRule
from .multipart import (
    CHUNK_SIZE,
    BodyError,
    BodyReader,
    PartHeaders,
    PartSink,
    boundary_from_content_type,
    parse_multipart,
)
from .state import (
    FILE_PURPOSES,
    MAX_BATCH_FILE_BYTES,
    MAX_FILE_BYTES,
    ApiError,
    Store,
    validate_form_expires_after,
)

JSON = dict[str, Any]

MAX_JSON_BODY_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024
#: Bodies announced larger than this are refused without being read (connection closed).
HARD_BODY_LIMIT = MAX_FILE_BYTES + 16 * 1024 * 1024


@dataclass(frozen=True)
class Counters:
    """A snapshot of the request counters (``server.counters``).

    ``counters["POST /v1/batches"]`` gives a route's request count (0 if none); ``counters["requests"]``,
    ``["connections"]``, ``["batches_created"]`` and ``["files_uploaded"]`` the totals.
    """

    routes: Mapping[str, int]
    requests: int
    connections: int
    batches_created: int
    files_uploaded: int

    def __getitem__(self, key: str) -> int:
        if key in ("requests", "total", "total_requests"):
            return self.requests
        if key in ("connections", "batches_created", "files_uploaded"):
            value: int = getattr(self, key)
            return value
        return self.routes.get(key, 0)

    def get(self, key: str, default: int = 0) -> int:
        value = self[key]
        return value if value or key in self.routes else default

    def as_dict(self) -> dict[str, Any]:
        return {
            "routes": dict(self.routes),
            "requests": self.requests,
            "connections": self.connections,
            "batches_created": self.batches_created,
            "files_uploaded": self.files_uploaded,
        }


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    file_size: int = 0

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(obj).encode("utf-8"), headers=dict(headers or {}))

    @classmethod
    def error(cls, exc: ApiError) -> Response:
        return cls.json(exc.status, exc.body(), exc.headers)

    @property
    def length(self) -> int:
        return self.file_size if self.file_path is not None else len(self.body)


_ID = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    ("POST", re.compile(r"^/v1/files$"), "POST /v1/files", "upload_file"),
    ("GET", re.compile(r"^/v1/files$"), "GET /v1/files", "list_files"),
    ("GET", re.compile(rf"^/v1/files/{_ID}$"), "GET /v1/files/{id}", "get_file"),
    ("GET", re.compile(rf"^/v1/files/{_ID}/content$"), "GET /v1/files/{id}/content", "file_content"),
    ("DELETE", re.compile(rf"^/v1/files/{_ID}$"), "DELETE /v1/files/{id}", "delete_file"),
    ("POST", re.compile(r"^/v1/batches$"), "POST /v1/batches", "create_batch"),
    ("GET", re.compile(r"^/v1/batches$"), "GET /v1/batches", "list_batches"),
    ("GET", re.compile(rf"^/v1/batches/{_ID}$"), "GET /v1/batches/{id}", "get_batch"),
    ("POST", re.compile(rf"^/v1/batches/{_ID}/cancel$"), "POST /v1/batches/{id}/cancel", "cancel_batch"),
]

_STATUS_MESSAGES = {
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}

_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>emulator fault: not_json</p></body></html>\n"
)


def normalize_path(path: str) -> str:
    """Map the Azure layouts (``/openai/v1/...``, ``/openai/...``) onto ``/v1/...``."""
    if len(path) > 1:
        path = path.rstrip("/")
    if path.startswith("/openai/v1/") or path == "/openai/v1":
        return path[len("/openai") :]
    if path.startswith("/openai/"):
        return "/v1" + path[len("/openai") :]
    return path


def match_route(method: str, path: str) -> tuple[str, str, str | None] | None:
    """(route key, handler name, id) for a normalized path, or None."""
    for m, pattern, key, name in _ROUTES:
        if m != method:
            continue
        match = pattern.match(path)
        if match:
            return key, name, (match.group(1) if match.groups() else None)
    return None


class _FieldSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.too_large = False

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > MAX_FIELD_BYTES:
            self.too_large = True
            return
        self.data.extend(data)

    def close(self) -> None:
        pass

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class _FileSink:
    """Writes an uploaded file to disk; past ``limit`` bytes it stops writing and only counts."""

    def __init__(self, path: Path, limit: int, filename: str | None) -> None:
        self.path = path
        self.limit = limit
        self.filename = filename
        self.size = 0
        self._fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115

    @property
    def too_large(self) -> bool:
        return self.size > self.limit

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._fh is None:
            return
        if self.size > self.limit:
            self._fh.close()
            self._fh = None
            self.path.unlink(missing_ok=True)
            return
        self._fh.write(data)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OpenAIBatchEmulator/0.1"
    disable_nagle_algorithm = True
    timeout = 600
    server: _HTTPServer

    # --------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            sys.stderr.write(f"[emulator] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _body_reader(self) -> BodyReader:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length_header = self.headers.get("Content-Length")
        length: int | None = None
        if length_header is not None and not chunked:
            try:
                length = int(length_header)
            except ValueError:
                raise ApiError(400, "Invalid Content-Length header.") from None
            if length < 0:
                raise ApiError(400, "Invalid Content-Length header.")
        return BodyReader(self.rfile, length, chunked)  # type: ignore[arg-type]

    @property
    def emu(self) -> EmulatorServer:
        return self.server.emulator

    @property
    def store(self) -> Store:
        return self.server.emulator.store

    def _dispatch(self, method: str) -> None:
        self.store.begin_request()
        try:
            self._serve(method)
        finally:
            self.store.end_request()

    def _serve(self, method: str) -> None:
        started = time.monotonic()
        request_id = "req_" + uuid.uuid4().hex
        split = urlsplit(self.path)
        path = normalize_path(split.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        route = match_route(method, path)
        route_key = route[0] if route else f"{method} <unmatched>"
        self.store.count_request(route_key)
        try:
            self._reader = self._body_reader()
        except ApiError as exc:
            self.close_connection = True
            self._send(Response.error(exc), request_id, started)
            return

        latency, rule = self.emu.faults.decide(route_key, method, path)
        if latency > 0:
            time.sleep(latency)
        if rule is not None and rule.kind in ("drop", "status", "not_json"):
            self._drain_or_close()
            if rule.kind == "drop":
                self.close_connection = True
                return
            if rule.kind == "status":
                self._send(self._fault_status(rule), request_id, started)
            else:
                self._send(Response(200, _HTML_PAGE, content_type="text/html; charset=utf-8"), request_id, started)
            return

        try:
            resp = self._handle(method, path, route, query)
        except ApiError as exc:
            resp = Response.error(exc)
        except BodyError as exc:
            resp = Response.error(ApiError(400, f"Malformed request body: {exc}"))
            self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception as exc:
            sys.stderr.write(f"[emulator] internal error on {method} {self.path}: {exc!r}\n")
            resp = Response.error(ApiError(500, "The emulator had an internal error.", type="server_error", code=None))
        if not self._reader.complete:
            self._drain_or_close()

        if rule is not None and rule.kind == "created_then_error":
            resp = self._fault_status(rule, status=500)
        truncate = rule is not None and rule.kind == "truncated"
        self._send(resp, request_id, started, truncate=truncate)

    def _drain_or_close(self) -> None:
        """Consume the unread request body, or close the connection if it is too big to bother."""
        reader = self._reader
        if reader.complete:
            return
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) - reader.bytes_read > HARD_BODY_LIMIT:
            self.close_connection = True
            return
        try:
            reader.drain()
        except (BodyError, OSError):
            self.close_connection = True

    def _fault_status(self, rule: FaultRule, status: int | None = None) -> Response:
        code = status or rule.status or 500
        message, type_, err_code = _STATUS_MESSAGES.get(
            code, (f"Emulated HTTP {code} error.", "server_error" if code >= 500 else "invalid_request_error", None)
        )
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            ra = rule.retry_after
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        if rule.retry_after_ms is not None:
            ms = rule.retry_after_ms
            headers["retry-after-ms"] = str(int(ms)) if float(ms).is_integer() else str(ms)
        return Response.json(
            code, {"error": {"message": message, "type": type_, "param": None, "code": err_code}}, headers
        )

    def _send(self, resp: Response, request_id: str, started: float, *, truncate: bool = False) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(resp.length))
            self.send_header("x-request-id", request_id)
            self.send_header("openai-processing-ms", str(int((time.monotonic() - started) * 1000)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            if truncate:
                self.send_header("Connection", "close")
                self.close_connection = True
            elif self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            limit = resp.length // 2 if truncate else resp.length
            if resp.file_path is None:
                self.wfile.write(resp.body[:limit])
            else:
                with open(resp.file_path, "rb") as fh:
                    left = limit
                    while left > 0:
                        chunk = fh.read(min(CHUNK_SIZE, left))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)
            self.wfile.flush()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # --------------------------------------------------------------- routes
    def _handle(
        self, method: str, path: str, route: tuple[str, str, str | None] | None, query: dict[str, str]
    ) -> Response:
        self._authenticate()
        if route is None:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        _key, name, ident = route
        handler: Callable[[str | None, dict[str, str]], Response] = getattr(self, f"_r_{name}")
        return handler(ident, query)

    def _authenticate(self) -> None:
        keys = []
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, cred = auth.strip().partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                keys.append(cred.strip())
        api_key = self.headers.get("api-key")
        if api_key and api_key.strip():
            keys.append(api_key.strip())
        if not keys:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or in an api-key header.",
            )
        expected = self.emu.api_key.encode("utf-8")
        if not any(hmac.compare_digest(k.encode("utf-8"), expected) for k in keys):
            raise ApiError(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _json_body(self, *, allow_empty: bool = False) -> Any:
        raw = self._reader.read_all(MAX_JSON_BODY_BYTES)
        if not raw.strip():
            if allow_empty:
                return {}
            raise ApiError(400, "The request body must be a JSON object.")
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
                "not valid JSON.)",
            ) from None

    @staticmethod
    def _int_param(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
        raw = query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(
                400,
                f"Invalid '{name}': expected an integer, but got '{raw}' instead.",
                param=name,
                code="invalid_type",
            ) from None
        if value < lo:
            raise ApiError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
        if value > hi:
            raise ApiError(
                400,
                f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, but got {value} instead.",
                param=name,
                code="integer_above_max_value",
            )
        return value

    def _r_list_files(self, _ident: str | None, query: dict[str, str]) -> Response:
        limit = self._int_param(query, "limit", 10_000, 1, 10_000)
        order = query.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise ApiError(
                400,
                f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                param="order",
                code="invalid_value",
            )
        purpose = query.get("purpose") or None
        return Response.json(
            200, self.store.list_files(purpose=purpose, limit=limit, order=order, after=query.get("after") or None)
        )

    def _r_get_file(self, ident: str | None, _query: dict[str, str]) -> Response:
        return Response.json(200, self.store.get_file(str(ident)).to_json())

    def _r_delete_file(self, ident: str | None, _query: dict[str, str]) -> Response:
        return Response.json(200, self.store.delete_file(str(ident)))

    def _r_file_content(self, ident: str | None, _query: dict[str, str]) -> Response:
        rec = self.store.get_file(str(ident))
        try:
            size = rec.path.stat().st_size
        except FileNotFoundError:
            raise ApiError(404, f"No such File object: {ident}", param="id") from None
        return Response(200, content_type="application/octet-stream", file_path=rec.path, file_size=size)

    def _r_upload_file(self, _ident: str | None, _query: dict[str, str]) -> Response:
        announced = self.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > HARD_BODY_LIMIT:
            self.close_connection = True
            raise ApiError(
                413,
                f"Request body too large: {announced} bytes. Files can be at most {MAX_FILE_BYTES} bytes.",
                param="file",
                code="file_too_large",
            )
        boundary = boundary_from_content_type(self.headers.get("Content-Type", ""))
        fields: dict[str, _FieldSink] = {}
        file_sink: _FileSink | None = None
        batch_limit = self.emu.max_batch_file_bytes

        def sink_for(headers: PartHeaders) -> PartSink:
            nonlocal file_sink
            if headers.name == "file" and file_sink is None:
                purpose = fields["purpose"].text().strip() if "purpose" in fields else None
                limit = batch_limit if purpose in (None, "batch") else MAX_FILE_BYTES
                if purpose is None:
                    limit = max(batch_limit, MAX_FILE_BYTES)
                file_sink = _FileSink(self.store.new_tmp_path(), limit, headers.filename)
                return file_sink
            sink = _FieldSink()
            if headers.name and headers.name not in fields:
                fields[headers.name] = sink
            return sink

        try:
            parse_multipart(self._reader, boundary, sink_for)
        except BaseException:
            if file_sink is not None:
                file_sink.discard()
            raise
        try:
            return self._finish_upload(file_sink, fields, batch_limit)
        except BaseException:
            if file_sink is not None:
                file_sink.discard()
            raise

    def _finish_upload(self, file_sink: _FileSink | None, fields: dict[str, _FieldSink], batch_limit: int) -> Response:
        purpose_sink = fields.get("purpose")
        if purpose_sink is None or not purpose_sink.text().strip():
            raise ApiError(
                400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        purpose = purpose_sink.text().strip()
        if purpose not in FILE_PURPOSES:
            raise ApiError(
                400,
                f"Invalid value: '{purpose}'. Supported values are: "
                + ", ".join(f"'{p}'" for p in FILE_PURPOSES)
                + ".",
                param="purpose",
                code="invalid_value",
            )
        if file_sink is None:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        limit = batch_limit if purpose == "batch" else MAX_FILE_BYTES
        if file_sink.size > limit:
            raise ApiError(
                400,
                f"File is too large: {file_sink.size} bytes. Files with purpose '{purpose}' can be at most "
                f"{limit} bytes.",
                param="file",
                code="file_too_large",
            )
        filename = file_sink.filename or "upload"
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            raise ApiError(
                400,
                f"Invalid file format for Batch API. Must be .jsonl (got '{filename}').",
                param="file",
                code="invalid_file_format",
            )
        expires: dict[str, Any] = {}
        for name, sink in fields.items():
            for prefix in ("expires_after[", "expires_after."):
                if name.startswith(prefix):
                    expires[name[len(prefix) :].rstrip("]")] = sink.text().strip()
                    break
            else:
                if name != "purpose":
                    # CreateFileRequest has additionalProperties: false; the service answers 400.
                    raise ApiError(400, f"Unrecognized request argument supplied: {name}", param=name)
        expires_seconds = validate_form_expires_after(expires or None, "expires_after")
        rec = self.store.add_file(
            file_sink.path, filename=filename, purpose=purpose, size=file_sink.size, expires_seconds=expires_seconds
        )
        return Response.json(200, rec.to_json())

    def _r_create_batch(self, _ident: str | None, _query: dict[str, str]) -> Response:
        azure = urlsplit(self.path).path.startswith("/openai/")
        return Response.json(200, self.store.create_batch(self._json_body(), azure=azure))

    def _r_get_batch(self, ident: str | None, _query: dict[str, str]) -> Response:
        return Response.json(200, self.store.get_batch(str(ident)))

    def _r_list_batches(self, _ident: str | None, query: dict[str, str]) -> Response:
        limit = self._int_param(query, "limit", 20, 1, 100)
        return Response.json(200, self.store.list_batches(after=query.get("after") or None, limit=limit))

    def _r_cancel_batch(self, ident: str | None, _query: dict[str, str]) -> Response:
        body = self._json_body(allow_empty=True)
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be empty or a JSON object.")
        return Response.json(200, self.store.cancel_batch(str(ident)))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.emulator.store.count_connection()
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        if self.emulator.verbose:
            super().handle_error(request, client_address)


class EmulatorServer:
    """A local OpenAI Batch + Files API emulator on ``http://host:port/v1``.

    ``phase_seconds`` is the time a batch spends in each of validating / in_progress / finalizing /
    cancelling; ``clock`` is any object with ``now() -> float`` (default: real time; pass a
    :class:`ManualClock` to drive the lifecycle by hand). ``data_dir`` holds uploaded and generated files
    (default: a temporary directory removed by :meth:`stop`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "sk-emulator",
        phase_seconds: float = 0.05,
        clock: Clock | None = None,
        data_dir: str | Path | None = None,
        verbose: bool = False,
        max_batch_file_bytes: int = MAX_BATCH_FILE_BYTES,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.api_key = api_key
        self.clock: Clock = clock if clock is not None else RealClock()
        self.verbose = verbose
        self.max_batch_file_bytes = max_batch_file_bytes
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="openai-batch-emulator-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.store = Store(self.clock, self.data_dir, phase_seconds)
        self.faults = FaultRegistry()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._stopped_tmp = False

    # ------------------------------------------------------------- lifecycle
    def start(self) -> EmulatorServer:
        if self._httpd is not None:
            return self
        if self._stopped_tmp:
            raise RuntimeError("this EmulatorServer was stopped and its temporary data dir removed; make a new one")
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-batch-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.close_open_connections()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._stopped_tmp = True

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The bound port (still reported after :meth:`stop`)."""
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``: the OpenAI base URL."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------- introspection
    @property
    def counters(self) -> Counters:
        s = self.store
        with s.lock:
            return Counters(
                routes=MappingProxyType(dict(s.route_counts)),
                requests=s.total_requests,
                connections=s.connections,
                batches_created=s.batches_created,
                files_uploaded=s.files_uploaded,
            )

    def reset_counters(self) -> None:
        self.store.reset_counters()

    @property
    def in_flight(self) -> int:
        """Requests being served right now (a delayed one still counts after its client gave up)."""
        with self.store.lock:
            return self.store.in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served: True, or False once ``timeout`` seconds have passed.

        Tests call this before counting what the server created, instead of sleeping a guessed time.
        """
        deadline = time.monotonic() + timeout
        while self.in_flight:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    @property
    def batches(self) -> Mapping[str, JSON]:
        """Read-only ``{batch_id: batch object}`` (lifecycle advanced to now), newest first."""
        return MappingProxyType({b["id"]: b for b in self.store.all_batches()})

    @property
    def files(self) -> Mapping[str, JSON]:
        """Read-only ``{file_id: file object}`` of stored files (uploads and batch outputs)."""
        with self.store.lock:
            return MappingProxyType({f.id: f.to_json() for f in self.store.files.values()})

    def get_batch(self, batch_id: str) -> JSON:
        return self.store.get_batch(batch_id)

    def file_content(self, file_id: str) -> bytes:
        return self.store.get_file(file_id).path.read_bytes()

    # ------------------------------------------------------------- control
    @property
    def phase_seconds(self) -> float:
        return self.store.phase_seconds

    def set_phase_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("phase_seconds must be >= 0")
        with self.store.lock:
            self.store.phase_seconds = float(seconds)

    def set_id_length(self, length: int | None) -> None:
        """Mint every new file and batch id ``length`` characters long (``None``: OpenAI's ids), to test a client
        against a gateway whose ids are no file names (LiteLLM's are about 330 characters)."""
        if length is not None and not 32 <= length <= 4096:
            raise ValueError("id length must be from 32 to 4096 characters")
        with self.store.lock:
            self.store.id_length = length

    def seed_batches(
        self,
        n: int,
        *,
        endpoint: str = "/v1/chat/completions",
        model: str = "gpt-4o-mini",
        metadata: dict[str, str] | None = None,
    ) -> list[str]:
        """Test/dev aid: create ``n`` batches straight in the store, without HTTP; return their ids, oldest first.

        For scale tests (paging through 10,000 batches, hundreds of waiting triggers) where creating them
        through the API one by one would dominate the run time. All share one single-request input file
        and run the normal lifecycle. They are not counted in ``counters["batches_created"]``, which keeps
        counting creates made through the API.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        line = {
            "custom_id": "seed-0",
            "method": "POST",
            "url": endpoint,
            "body": {"model": model, "messages": [{"role": "user", "content": "seeded"}]},
        }
        tmp = self.store.new_tmp_path()
        tmp.write_bytes((json.dumps(line) + "\n").encode("utf-8"))
        size = tmp.stat().st_size
        with self.store.lock:
            source = self.store.add_file(tmp, filename="seed.jsonl", purpose="batch", size=size, expires_seconds=None)
            self.store.files_uploaded -= 1  # not an upload through the API either
            body: dict[str, Any] = {"input_file_id": source.id, "endpoint": endpoint, "completion_window": "24h"}
            if metadata:
                body["metadata"] = dict(metadata)
            return [self.store.create_batch(body, counted=False)["id"] for _ in range(n)]

    def expire_batch(self, batch_id: str) -> JSON:
        """Expire a non-terminal batch now (finished requests kept, the rest ``batch_expired``)."""
        return self.store.expire_batch(batch_id)

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"EmulatorServer({where})"
