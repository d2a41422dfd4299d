"""A minimal asyncio loopback server for the polling benchmarks: ``GET /v1/batches/{id}`` and ``GET /v1/batches``.

One process, one event loop, no thread per connection: 1,000 kept-alive connections cost it 1,000
small coroutines, so it is never what limits the trigger figures. It speaks just enough HTTP/1.1 for
``httpx`` (used by both providers): request line, headers, ``Content-Length`` bodies, keep-alive.

Behaviour, set with ``POST /_bench/reset?latency=S&complete_after=S&complete_after_polls=N&population=N&others=K``:

- every ``GET /v1/batches/{id}`` waits ``latency`` seconds (``asyncio.sleep``) and then answers a batch
  that is ``in_progress`` until ``complete_after`` seconds after that batch id was first reported (or until
  its ``complete_after_polls``-th poll), then ``completed``;
- ``GET /v1/batches?limit=L&after=ID`` (same latency) lists, newest first, the ``population`` batches
  ``batch_bench_{N-1}`` ... ``batch_bench_0`` created one second apart, below ``others`` newer batches that nobody
  waits on; a listed batch counts as reported;
- ``GET /_bench/stats`` answers the counters since the last reset: TCP connections accepted, requests (polls),
  the arrival time (server monotonic clock, relative to the reset) of every request, list requests, and
  ``done_at``: when each batch turned ``completed`` (``time.monotonic()`` of this machine).

Control requests and polls of batch ids starting with ``warmup`` (which complete at once) are not
counted. Run: ``python -m benchmarks.loopback --port 0``; the first stdout line
is ``loopback listening on http://127.0.0.1:PORT/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}


class State:
    def __init__(self) -> None:
        self.reset({})

    def reset(self, params: dict[str, str]) -> None:
        self.latency = float(params.get("latency", 0.0))
        self.complete_after = float(params.get("complete_after", 10.0))
        self.complete_after_polls = int(params.get("complete_after_polls", 0))
        self.t0 = time.monotonic()
        self.connections = 0
        self.polls = 0
        self.poll_times: list[float] = []
        self.first_seen: dict[str, float] = {}
        self.poll_counts: dict[str, int] = {}
        self.lists = 0
        population = int(params.get("population", 0))
        others = int(params.get("others", 0))
        # Newest first, as GET /v1/batches lists them.
        self.listing = [f"batch_other_{j}" for j in reversed(range(others))] + [
            f"batch_bench_{i}" for i in reversed(range(population))
        ]
        self.position = {batch_id: index for index, batch_id in enumerate(self.listing)}
        self.created = int(time.time())

    def stats(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "polls": self.polls,
            "poll_times": self.poll_times,
            "batches": len(self.first_seen),
            "lists": self.lists,
            "done_at": {batch_id: first + self.complete_after for batch_id, first in self.first_seen.items()},
        }

    def page(self, after: str | None, limit: int) -> dict[str, Any]:
        start = self.position[after] + 1 if after in self.position else 0
        ids = self.listing[start : start + limit]
        data = [self.batch(batch_id, polled=False) for batch_id in ids]
        has_more = start + limit < len(self.listing)
        return {"object": "list", "data": data, "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None, "has_more": has_more}  # fmt: skip

    def batch(self, batch_id: str, *, polled: bool = True) -> dict[str, Any]:
        now = time.monotonic()
        first = self.first_seen.setdefault(batch_id, now)
        count = self.poll_counts.get(batch_id, 0) + polled
        self.poll_counts[batch_id] = count
        by_polls = self.complete_after_polls
        done = count >= by_polls if by_polls else now - first >= self.complete_after
        position = self.position.get(batch_id)
        created = self.created - position if position is not None else int(time.time() - (now - first))
        return {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": "file-bench",
            "completion_window": "24h",
            "status": "completed" if done else "in_progress",
            "output_file_id": "file-out" if done else None,
            "error_file_id": None,
            "created_at": created,
            "in_progress_at": created,
            "expires_at": created + 86400,
            "finalizing_at": int(time.time()) if done else None,
            "completed_at": int(time.time()) if done else None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 100, "completed": 100 if done else 40, "failed": 0},
            "metadata": None,
        }


STATE = State()


def _response(status: int, payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n"
        "x-request-id: req_bench\r\n\r\n"
    )
    return head.encode() + body


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    counted = False
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
            parts = urlsplit(target)
            path = parts.path
            if path.startswith("/_bench/"):
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                if path == "/_bench/reset":
                    STATE.reset(params)
                    payload: object = {"ok": True}
                else:
                    payload = STATE.stats()
                writer.write(_response(200, payload))
            elif method == "GET" and path.startswith("/v1/batches/warmup"):
                # Warm-up polls (process-wide lazy imports and set-up) complete at once and are not counted.
                batch = STATE.batch(path.rsplit("/", 1)[1])
                batch["status"] = "completed"
                writer.write(_response(200, batch))
            elif method == "GET" and path == "/v1/batches":
                if not counted:
                    counted = True
                    STATE.connections += 1
                STATE.polls += 1
                STATE.lists += 1
                STATE.poll_times.append(time.monotonic() - STATE.t0)
                if STATE.latency:
                    await asyncio.sleep(STATE.latency)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                writer.write(_response(200, STATE.page(query.get("after"), int(query.get("limit", "20")))))
            elif method == "GET" and path.startswith("/v1/batches/"):
                if not counted:
                    counted = True
                    STATE.connections += 1
                STATE.polls += 1
                STATE.poll_times.append(time.monotonic() - STATE.t0)
                if STATE.latency:
                    await asyncio.sleep(STATE.latency)
                writer.write(_response(200, STATE.batch(path.rsplit("/", 1)[1])))
            else:
                writer.write(_response(404, {"error": {"message": f"no route {method} {path}", "type": "bench"}}))
            await writer.drain()
            if close:
                return
    except Exception as exc:  # a broken client must not stop the server
        print(f"loopback: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        writer.close()


async def _serve(host: str, port: int) -> None:
    server = await asyncio.start_server(_handle, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"loopback listening on http://{host}:{bound}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop  # type: ignore[import-not-found]  # comes with the bench environment (uvicorn)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
