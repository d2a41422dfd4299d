"""Big uploads (limit, bounded memory), the CLI process, and many concurrent keep-alive clients."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_openai_batch.emulator import MAX_BATCH_FILE_BYTES, EmulatorServer
from tests._kit.emulator_calls import chat_jsonl, submit

LINE_RE = re.compile(r"^OpenAI Batch emulator listening on (http://127\.0\.0\.1:(\d+)/v1)$")
MiB = 1024 * 1024


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def stream_upload(port: int, path: Path, *, filename: str = "big.jsonl", purpose: str = "batch") -> tuple[int, Any]:
    """Upload ``path`` as multipart without holding it in memory (http.client + a generator body)."""
    boundary = "emuStreamBoundary7"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as fh:
            while chunk := fh.read(MiB):
                yield chunk
        yield tail

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST",
            "/v1/files",
            body=body(),
            headers={
                "Authorization": "Bearer sk-emulator",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            },
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_upload_over_200mb_rejected(emulator: EmulatorServer, tmp_path: Path) -> None:
    assert 200 * MiB == MAX_BATCH_FILE_BYTES
    big = sparse_file(tmp_path / "big.jsonl", MAX_BATCH_FILE_BYTES + 1)
    status, body = stream_upload(emulator.port, big)
    assert status == 400
    assert body["error"]["code"] == "file_too_large"
    assert body["error"]["param"] == "file"
    assert body["error"]["type"] == "invalid_request_error"
    assert emulator.counters.files_uploaded == 0
    assert list((emulator.data_dir / "tmp").iterdir()) == []
    assert list((emulator.data_dir / "files").iterdir()) == []


def _proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _start_cli(*args: str, data_dir: Path | None = None) -> tuple[subprocess.Popen[str], str, int]:
    cmd = [sys.executable, "-m", "airflow_provider_openai_batch.emulator", "--port", "0", *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().rstrip("\n")
    match = LINE_RE.match(line)
    if not match:
        proc.kill()
        raise AssertionError(f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}")
    return proc, match.group(1), int(match.group(2))


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_large_upload_memory_stays_bounded(tmp_path: Path) -> None:
    proc, base_url, port = _start_cli("--phase-seconds", "0.01", data_dir=tmp_path / "data")
    try:
        requests.get(f"{base_url}/files", headers={"Authorization": "Bearer sk-emulator"}).raise_for_status()
        rss_before = _proc_status(proc.pid, "VmRSS")
        big = sparse_file(tmp_path / "hundred.jsonl", 100 * MiB)
        status, body = stream_upload(port, big)
        assert status == 200, body
        assert body["bytes"] == 100 * MiB
        # stream it back
        with requests.get(
            f"{base_url}/files/{body['id']}/content", headers={"Authorization": "Bearer sk-emulator"}, stream=True
        ) as r:
            r.raise_for_status()
            assert int(r.headers["Content-Length"]) == 100 * MiB
            assert sum(len(c) for c in r.iter_content(MiB)) == 100 * MiB
        peak = _proc_status(proc.pid, "VmHWM")
        assert peak - rss_before < 50 * MiB, (rss_before, peak)
        assert (tmp_path / "data" / "files" / body["id"]).stat().st_size == 100 * MiB
    finally:
        code, _ = _stop(proc)
    assert code == 0


def test_cli_starts_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc, base_url, _port = _start_cli(
        "--phase-seconds", "0", "--api-key", "sk-cli", "--fault", "GET /v1/batches:status=503:times=1"
    )
    try:
        h = {"Authorization": "Bearer sk-cli"}
        assert requests.get(f"{base_url}/batches", headers=h).status_code == 503
        assert requests.get(f"{base_url}/batches", headers=h).status_code == 200
        f = requests.post(
            f"{base_url}/files", headers=h, files={"file": ("a.jsonl", chat_jsonl(2))}, data={"purpose": "batch"}
        ).json()
        b = requests.post(
            f"{base_url}/batches",
            headers=h,
            json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ).json()
        assert requests.get(f"{base_url}/batches/{b['id']}", headers=h).json()["status"] == "completed"
    finally:
        code, rest = _stop(proc)
    assert code == 0
    assert rest == ""  # exactly one line on stdout


def test_cli_sigint_and_data_dir(tmp_path: Path) -> None:
    proc, base_url, _ = _start_cli(data_dir=tmp_path / "d")
    try:
        r = requests.post(
            f"{base_url}/files",
            headers={"api-key": "sk-emulator"},
            files={"file": ("a.jsonl", b"{}\n")},
            data={"purpose": "batch"},
        )
        assert r.status_code == 200
    finally:
        code, _ = _stop(proc, signal.SIGINT)
    assert code == 0
    assert (tmp_path / "d" / "files" / r.json()["id"]).read_bytes() == b"{}\n"


def test_cli_enqueued_limits(tmp_path: Path) -> None:
    proc, base_url, _ = _start_cli("--phase-seconds", "0", "--enqueued-request-limit", "3")
    try:
        h = {"Authorization": "Bearer sk-emulator"}

        def status(lines: int) -> Any:
            upload = {"file": ("a.jsonl", chat_jsonl(lines))}
            f = requests.post(f"{base_url}/files", headers=h, files=upload, data={"purpose": "batch"}).json()
            body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
            b = requests.post(f"{base_url}/batches", headers=h, json=body).json()
            return requests.get(f"{base_url}/batches/{b['id']}", headers=h).json()

        over = status(4)
        assert over["status"] == "failed" and over["errors"]["data"][0]["code"] == "request_limit_exceeded"
        assert status(3)["status"] == "completed"
    finally:
        code, _ = _stop(proc)
    assert code == 0


def test_cli_id_length(tmp_path: Path) -> None:
    proc, base_url, _ = _start_cli("--id-length", "330", data_dir=tmp_path / "d")
    try:
        h = {"Authorization": "Bearer sk-emulator"}
        upload = {"file": ("a.jsonl", chat_jsonl(1))}
        f = requests.post(f"{base_url}/files", headers=h, files=upload, data={"purpose": "batch"}).json()
        assert len(f["id"]) == 330
        assert requests.get(f"{base_url}/files/{f['id']}/content", headers=h).content == chat_jsonl(1)
    finally:
        code, _ = _stop(proc)
    assert code == 0
    mod = [sys.executable, "-m", "airflow_provider_openai_batch.emulator", "--port", "0"]
    bad = subprocess.run([*mod, "--id-length", "8"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "32 to 4096" in bad.stderr and bad.stdout == ""


def test_cli_help_and_bad_fault() -> None:
    mod = [sys.executable, "-m", "airflow_provider_openai_batch.emulator"]
    out = subprocess.run([*mod, "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    options = ("--fault", "--phase-seconds", "--api-key", "--data-dir", "--enqueued-token-limit")
    for word in (*options, "--enqueued-request-limit", "--id-length", "created_then_error", "retry_after", "hold"):
        assert word in out
    bad = subprocess.run([*mod, "--port", "0", "--fault", "*:explode"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "explode" in bad.stderr and bad.stdout == ""


def test_many_concurrent_keepalive_pollers(emulator: EmulatorServer, session: requests.Session) -> None:
    batch = submit(session, emulator, chat_jsonl(3))
    emulator.reset_counters()
    clients, polls = 250, 4
    barrier = threading.Barrier(clients, timeout=60)
    errors: list[BaseException] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def poller() -> None:
        try:
            with requests.Session() as s:
                s.headers["Authorization"] = "Bearer sk-emulator"
                url = f"{emulator.base_url}/batches/{batch['id']}"
                codes = [s.get(url, timeout=30).status_code]
                barrier.wait()  # every client holds an open keep-alive connection now
                codes += [s.get(url, timeout=30).status_code for _ in range(polls - 1)]
            with lock:
                statuses.extend(codes)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=poller) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert statuses == [200] * (clients * polls)
    c = emulator.counters
    assert c.connections == clients
    assert c["GET /v1/batches/{id}"] == clients * polls


def test_stop_closes_idle_keepalive_connections() -> None:
    emu = EmulatorServer().start()
    base_url = emu.base_url
    s = requests.Session()
    s.headers["Authorization"] = "Bearer sk-emulator"
    assert s.get(f"{base_url}/batches").status_code == 200
    data_dir = emu.data_dir
    assert data_dir.name.startswith("openai-batch-emulator-")
    emu.stop()
    assert not emu.running
    assert not data_dir.exists()
    assert emu.base_url == base_url  # still reports where it was
    with pytest.raises(requests.ConnectionError):
        s.get(f"{base_url}/batches", timeout=2)
    s.close()
    emu.stop()  # idempotent
