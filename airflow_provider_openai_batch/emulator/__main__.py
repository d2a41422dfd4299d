"""``python -m airflow_provider_openai_batch.emulator``: run the emulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .faults import parse_fault_spec
from .launch import READY_PREFIX
from .server import EmulatorServer

_FAULT_HELP = """\
fault rules (--fault, repeatable): ROUTE:KIND[=VALUE][:OPTION=VALUE]...
  ROUTE   '*' or a route key: 'POST /v1/files', 'GET /v1/files', 'GET /v1/files/{id}',
          'GET /v1/files/{id}/content', 'DELETE /v1/files/{id}', 'POST /v1/batches',
          'GET /v1/batches', 'GET /v1/batches/{id}', 'POST /v1/batches/{id}/cancel'
          (or a concrete 'METHOD /v1/path')
  KIND    status=CODE        answer CODE (429, 500, 502, 503, ...) with a JSON error body
          latency=SECONDS    wait before answering (then answer normally)
          drop               close the connection without answering
          created_then_error perform the request (batch/file really created), then answer 500
          truncated          perform the request, send Content-Length but half the body, close
          not_json           answer 200 with an HTML page
  OPTIONS times=N|forever (default 1), after=N (skip the first N matches, default 0),
          retry_after=SECONDS (Retry-After header), retry_after_ms=MS (retry-after-ms header)
examples:
  --fault 'POST /v1/batches:status=503:times=2'
  --fault 'GET /v1/batches/{id}:latency=0.25:times=forever'
  --fault '*:status=429:retry_after=1:times=1'
  --fault 'POST /v1/batches:created_then_error'

batch metadata key "emulator" (comma-separated): hold | stall=PERCENT | expire | slow | token_limit
request lines fail (400, error file) when body.model ends with "-fail" or body.emulator_fail is true
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_openai_batch.emulator",
        description="Local emulator of the OpenAI Batch + Files API (loopback only by default).",
        epilog=_FAULT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port to bind; 0 picks a free one (default 8787)")
    parser.add_argument("--api-key", default="sk-emulator", help="accepted API key (default sk-emulator)")
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=0.5,
        help="seconds spent in each of validating/in_progress/finalizing/cancelling (default 0.5)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", help="add a fault rule (see below); repeatable"
    )
    for what in ("token", "request"):
        parser.add_argument(
            f"--enqueued-{what}-limit",
            type=int,
            default=None,
            metavar="N",
            help=f"enqueued-{what} limit per model: a batch over it fails with {what}_limit_exceeded (default: none)",
        )
    parser.add_argument(
        "--id-length",
        type=int,
        default=None,
        metavar="N",
        help="mint every file and batch id N characters long (32 to 4096), as a gateway may (default: OpenAI's)",
    )
    parser.add_argument("--data-dir", default=None, help="where files are stored (default: a temporary directory)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for spec in args.fault:
        try:
            parse_fault_spec(spec)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    server = EmulatorServer(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        phase_seconds=args.phase_seconds,
        data_dir=args.data_dir,
        verbose=args.verbose,
    )
    for spec in args.fault:
        server.faults.add_spec(spec)
    server.store.enqueued_token_limit = args.enqueued_token_limit
    server.store.enqueued_request_limit = args.enqueued_request_limit
    try:
        server.set_id_length(args.id_length)
    except ValueError as exc:
        server.stop()  # removes its temporary data dir
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"{READY_PREFIX}{server.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
