"""Helpers of the hook tests: realistic payloads and a tiny threaded HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-SECRET-1234"
#: Base URL of the ``responses`` tests: nothing listens there, ``responses`` intercepts every call.
BASE = "http://127.0.0.1:9/v1"


def batch_payload(batch_id: str = "batch_abc123", status: str = "in_progress", **overrides: Any) -> dict[str, Any]:
    """A complete batch object as the API returns it (every key present, nulls when unset)."""
    payload: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini-2024-07-18",
        "errors": None,
        "input_file_id": "file-abc123",
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1711471533,
        "in_progress_at": 1711471538,
        "expires_at": 1711557933,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 100, "completed": 10, "failed": 0},
        "usage": None,
        "metadata": {"customer_id": "user_123456789"},
    }
    payload.update(overrides)
    return payload


def page_payload(batches: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list",
        "data": batches,
        "first_id": batches[0]["id"] if batches else None,
        "last_id": batches[-1]["id"] if batches else None,
        "has_more": has_more,
    }


def file_payload(file_id: str = "file-abc123", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": file_id,
        "object": "file",
        "bytes": 120000,
        "created_at": 1677610602,
        "expires_at": None,
        "filename": "batch_input.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }
    payload.update(overrides)
    return payload


Handler = Callable[["RequestHandler"], None]


class RequestHandler(BaseHTTPRequestHandler):
    """Dispatches to the test's route functions; HTTP/1.1 keep-alive so connection reuse is visible."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.owner.lock:
            self.server.owner.connections += 1

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def _dispatch(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.requests.append((self.command, self.path, dict(self.headers.items())))
        handler = owner.routes.get((self.command, path))
        if handler is None:
            self.read_body()
            self.send_json(404, {"error": {"message": f"no route {self.command} {path}", "type": "test"}})
            return
        handler(self)

    do_GET = do_POST = do_DELETE = _dispatch

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalServer


class LocalServer:
    """A threaded ``http.server`` on 127.0.0.1 with per-test routes, counting connections and requests."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), RequestHandler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, "/v1" + path)] = handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
