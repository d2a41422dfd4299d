"""OpenAIBatchHook file transfers against a real HTTP server on 127.0.0.1: streaming, restarts, atomicity, memory.

The 200 MB tests check that neither the upload nor the download holds the file in memory: the peak of traced
Python allocations (``tracemalloc``) and the growth of the peak RSS of a separate process (``getrusage``) both
stay under 50 MB.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.exceptions import APIConnectionError, NotFoundError
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests._kit.http_server import API_KEY, LocalServer, RequestHandler, file_payload
from tests._kit.memory_tracing import traced_peak

MB = 1024 * 1024
BIG = 200 * MB
LIMIT = 50 * MB
LINE = b'{"custom_id": "request-000000", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def content_route(data: bytes, *, drops: int = 0, drop_at: int | None = None) -> Callable[[RequestHandler], None]:
    """Serve ``data``; the first ``drops`` answers announce the full length but break off after ``drop_at`` bytes."""
    state = {"served": 0}

    def handler(req: RequestHandler) -> None:
        state["served"] += 1
        req.send_response(200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if state["served"] <= drops:
            req.wfile.write(data[: drop_at if drop_at is not None else len(data) // 2])
            req.wfile.flush()
            req.close_connection = True  # the socket closes with bytes still owed
            return
        req.wfile.write(data)

    return handler


@pytest.fixture
def local_hook(server: LocalServer, set_conn: Callable[..., None]) -> OpenAIBatchHook:
    set_conn(host=server.url, max_retries=2)
    return OpenAIBatchHook()


def content_requests(server: LocalServer, file_id: str) -> int:
    return sum(1 for method, path, _ in server.requests if method == "GET" and path == f"/v1/files/{file_id}/content")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


class TestDownload:
    DATA = b"".join(LINE.replace(b"000000", f"{i:06d}".encode()) for i in range(5000))

    def test_to_path(self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path) -> None:
        server.route("GET", "/files/file-out/content", content_route(self.DATA))
        target = tmp_path / "nested" / "out.jsonl"
        assert local_hook.download_file("file-out", target) == len(self.DATA)
        assert target.read_bytes() == self.DATA
        assert leftovers(target.parent) == []
        (_, _, headers) = server.requests[0]
        assert headers["Accept"] == "application/binary"
        assert headers["Authorization"] == f"Bearer {API_KEY}"

    def test_to_file_object(self, server: LocalServer, local_hook: OpenAIBatchHook) -> None:
        server.route("GET", "/files/file-out/content", content_route(self.DATA))
        sink = io.BytesIO(b"prefix|")
        sink.seek(0, io.SEEK_END)
        assert local_hook.download_file("file-out", sink) == len(self.DATA)
        assert sink.getvalue() == b"prefix|" + self.DATA

    def test_dropped_transfer_is_restarted(
        self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path
    ) -> None:
        server.route("GET", "/files/file-out/content", content_route(self.DATA, drops=1))
        target = tmp_path / "out.jsonl"
        assert local_hook.download_file("file-out", target) == len(self.DATA)
        assert target.read_bytes() == self.DATA
        assert content_requests(server, "file-out") == 2
        assert leftovers(tmp_path) == []

    def test_dropped_transfer_into_a_file_object_is_restarted_without_duplicates(
        self, server: LocalServer, local_hook: OpenAIBatchHook
    ) -> None:
        server.route("GET", "/files/file-out/content", content_route(self.DATA, drops=2))
        sink = io.BytesIO(b"keep|")
        sink.seek(0, io.SEEK_END)
        assert local_hook.download_file("file-out", sink) == len(self.DATA)
        assert sink.getvalue() == b"keep|" + self.DATA
        assert content_requests(server, "file-out") == 3

    def test_failure_mid_stream_leaves_no_file(
        self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path
    ) -> None:
        server.route("GET", "/files/file-out/content", content_route(self.DATA, drops=99))
        target = tmp_path / "out.jsonl"
        with pytest.raises(APIConnectionError) as info:
            local_hook.download_file("file-out", target)
        assert "after 2 retries" in str(info.value)
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []
        assert content_requests(server, "file-out") == 3

    def test_failure_mid_stream_keeps_the_previous_file_intact(
        self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path
    ) -> None:
        server.route("GET", "/files/file-out/content", content_route(self.DATA, drops=99))
        target = tmp_path / "out.jsonl"
        target.write_bytes(b"old complete result\n")
        with pytest.raises(APIConnectionError):
            local_hook.download_file("file-out", target)
        assert target.read_bytes() == b"old complete result\n"
        assert leftovers(tmp_path) == []

    def test_unseekable_destination_is_not_restarted_into_duplicate_bytes(
        self, server: LocalServer, local_hook: OpenAIBatchHook
    ) -> None:
        class Pipe(io.RawIOBase):
            def __init__(self) -> None:
                self.received = bytearray()

            def writable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return False

            def write(self, data: Any) -> int:
                self.received += data
                return len(data)

        data = self.DATA * 8  # several download chunks: the first arrives before the transfer breaks off
        server.route("GET", "/files/file-out/content", content_route(data, drops=1, drop_at=len(data) // 2))
        pipe = Pipe()
        with pytest.raises(APIConnectionError):
            local_hook.download_file("file-out", pipe)  # type: ignore[arg-type]
        assert 0 < len(pipe.received) < len(data)
        assert bytes(pipe.received) == data[: len(pipe.received)]  # what arrived, once; never a second copy
        assert content_requests(server, "file-out") == 1

    def test_missing_file_fails_fast_and_leaves_no_file(
        self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path
    ) -> None:
        target = tmp_path / "out.jsonl"
        with pytest.raises(NotFoundError) as info:
            local_hook.download_file("file-missing", target)
        assert info.value.path == "/files/file-missing/content"
        assert not target.exists()
        assert leftovers(tmp_path) == []
        assert content_requests(server, "file-missing") == 1

    def test_malformed_file_id_is_rejected(self, local_hook: OpenAIBatchHook, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            local_hook.download_file("../secrets", tmp_path / "x")

    def test_iter_file_lines(self, server: LocalServer, local_hook: OpenAIBatchHook) -> None:
        long_line = b'{"custom_id": "long", "pad": "' + b"x" * (3 * MB) + b'"}'
        data = b'{"a": 1}\r\n\n{"b": "\xc3\xa9"}\n' + long_line + b"\n   \n" + b'{"c": 3}'
        server.route("GET", "/files/file-out/content", content_route(data))
        lines = list(local_hook.iter_file_lines("file-out"))
        assert lines == ['{"a": 1}', "", '{"b": "é"}', long_line.decode(), "   ", '{"c": 3}']
        assert json.loads(lines[2]) == {"b": "é"}


class TestUpload:
    def test_server_receives_a_well_formed_multipart(
        self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path
    ) -> None:
        received: dict[str, Any] = {}

        def on_upload(req: RequestHandler) -> None:
            received["headers"] = dict(req.headers.items())
            received["body"] = req.read_body()
            req.send_json(200, file_payload("file-up", bytes=120, filename="in.jsonl"))

        server.route("POST", "/files", on_upload)
        source = tmp_path / "in.jsonl"
        source.write_bytes(LINE * 3)
        uploaded = local_hook.upload_file(source, expires_after_seconds=3600)
        assert uploaded.id == "file-up"
        headers = received["headers"]
        assert "chunked" not in headers.get("Transfer-Encoding", "")
        assert int(headers["Content-Length"]) == len(received["body"])
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + received["body"]
        )
        parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        assert set(parts) == {"purpose", "file", "expires_after[anchor]", "expires_after[seconds]"}
        assert parts["file"].get_filename() == "in.jsonl"
        assert parts["file"].get_payload(decode=True) == LINE * 3

    def test_upload_is_retried_on_429_with_the_whole_body(
        self, server: LocalServer, local_hook: OpenAIBatchHook, tmp_path: Path
    ) -> None:
        bodies: list[bytes] = []

        def on_upload(req: RequestHandler) -> None:
            bodies.append(req.read_body())
            if len(bodies) == 1:
                req.send_json(429, {"error": {"message": "slow down", "type": "requests"}}, {"Retry-After": "0"})
            else:
                req.send_json(200, file_payload("file-up"))

        server.route("POST", "/files", on_upload)
        source = tmp_path / "in.jsonl"
        source.write_bytes(LINE * 2000)
        assert local_hook.upload_file(source).id == "file-up"
        assert len(bodies) == 2
        assert bodies[0] == bodies[1]
        assert (LINE * 2000) in bodies[1]


# ---------------------------------------------------------------------------------------------------------------
# 200 MB in constant memory
# ---------------------------------------------------------------------------------------------------------------

BLOCK = (LINE * (MB // len(LINE) + 1))[:MB]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big_input.jsonl"
    with path.open("wb") as out:
        for _ in range(BIG // MB):
            out.write(BLOCK)
    assert path.stat().st_size == BIG
    return path


def counting_upload(stats: dict[str, int]) -> Callable[[RequestHandler], None]:
    """Read the upload in 1 MB pieces, keeping only counts and the multipart framing."""

    def handler(req: RequestHandler) -> None:
        remaining = int(req.headers["Content-Length"])
        boundary = req.headers["Content-Type"].split("boundary=", 1)[1].encode()
        total, head, tail = 0, b"", b""
        while remaining:
            piece = req.rfile.read(min(MB, remaining))
            if not piece:
                break
            if len(head) < 4096:
                head += piece[:4096]
            tail = (tail + piece)[-256:]
            total += len(piece)
            remaining -= len(piece)
        head_len = head.index(b"\r\n\r\n", head.index(b'name="file"')) + 4
        closing = b"\r\n--" + boundary + b"--\r\n"
        assert tail.endswith(closing)
        stats.update(total=total, file_bytes=total - head_len - len(closing))
        req.send_json(200, file_payload("file-big", bytes=stats["file_bytes"], filename="big_input.jsonl"))

    return handler


def streaming_download(req: RequestHandler) -> None:
    req.send_response(200)
    req.send_header("Content-Type", "application/octet-stream")
    req.send_header("Content-Length", str(BIG))
    req.end_headers()
    for _ in range(BIG // MB):  # a generator of 1 MB blocks, never the whole file
        req.wfile.write(BLOCK)


@pytest.fixture
def big_server(server: LocalServer, set_conn: Callable[..., None]) -> tuple[LocalServer, dict[str, int]]:
    stats: dict[str, int] = {}
    server.route("POST", "/files", counting_upload(stats))
    server.route("GET", "/files/file-big/content", streaming_download)
    set_conn(host=server.url, max_retries=0)
    return server, stats


def test_upload_200mb_streams_in_constant_memory(
    big_server: tuple[LocalServer, dict[str, int]], big_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, stats = big_server
    hook = OpenAIBatchHook()
    hook.settings  # noqa: B018 - connection lookup and session set-up are not part of the measurement
    hook.get_conn()
    uploaded, peak = traced_peak(lambda: hook.upload_file(big_file))
    with capsys.disabled():
        print(f"\n200 MB upload: traced peak {peak / MB:.1f} MB")
    assert stats["file_bytes"] == BIG
    assert uploaded.bytes == BIG
    assert peak < LIMIT


def test_download_200mb_streams_in_constant_memory(
    big_server: tuple[LocalServer, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = OpenAIBatchHook()
    hook.settings  # noqa: B018
    hook.get_conn()
    target = tmp_path / "big_output.jsonl"
    written, peak = traced_peak(lambda: hook.download_file("file-big", target))
    with capsys.disabled():
        print(f"\n200 MB download: traced peak {peak / MB:.1f} MB")
    assert written == BIG == target.stat().st_size
    with target.open("rb") as handle:
        assert handle.read(MB) == BLOCK
    target.unlink()
    assert peak < LIMIT


RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

    def rss_mb():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE / 2**20

    import os
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def peak_growth(call):
        # The peak of the resident set while ``call`` runs, sampled every 5 ms, minus the RSS before it.
        base, peak, done = rss_mb(), [rss_mb()], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb())
                time.sleep(0.005)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = call()
        finally:
            done.set()
            sampler.join()
        return result, max(peak[0], rss_mb()) - base

    source, target = sys.argv[1], sys.argv[2]
    hook = OpenAIBatchHook()
    hook.list_files(limit=1)  # warm up: connection lookup, session, imports
    uploaded, upload = peak_growth(lambda: hook.upload_file(source))
    written, download = peak_growth(lambda: hook.download_file("file-big", target))
    # Control: the same measurement notices a file read into memory.
    data, control = peak_growth(lambda: open(source, "rb").read())
    print(json.dumps({"upload": upload, "download": download, "control": control,
                      "uploaded": uploaded.bytes, "written": written, "read": len(data)}))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="samples /proc/self/statm")
def test_upload_and_download_200mb_rss_growth_in_a_subprocess(
    big_server: tuple[LocalServer, dict[str, int]], big_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = big_server
    server.route("GET", "/files", lambda req: req.send_json(200, {"object": "list", "data": []}))
    target = tmp_path / "big_output.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(big_file), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with capsys.disabled():
        print(
            f"\n200 MB in a subprocess: peak RSS growth upload {result['upload']:.1f} MB, "
            f"download {result['download']:.1f} MB (control, whole file read: {result['control']:.0f} MB)"
        )
    assert result["control"] > 150  # the sampler does see a 200 MB buffer
    assert result["uploaded"] == BIG
    assert result["written"] == BIG
    assert result["upload"] < LIMIT / MB
    assert result["download"] < LIMIT / MB
    target.unlink()
