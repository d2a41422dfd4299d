"""Secret hygiene: the API key appears in no log line (DEBUG included), exception, XCom, trigger kwargs or
rendered field, and TLS verification is on unless turned off explicitly.

Every search goes through :meth:`tests._kit.reliability.Registry.searched`, so the summary's "secrets found" is the
number of times a key was actually found.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pickle
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    AuthenticationError,
    OpenAIBatchAPIError,
)
from airflow_provider_openai_batch.hooks._request import ApiRequest
from airflow_provider_openai_batch.hooks._settings import ConnectionSettings
from airflow_provider_openai_batch.hooks._transport import tls_context
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests._kit.batches import ENDPOINT, jsonl, write
from tests._kit.connection import connection_json, set_connection
from tests._kit.reliability import REGISTRY

HERE = Path(__file__).resolve().parent
HTTP_LOGGERS = ("", "urllib3", "requests", "httpx", "httpcore", "airflow_provider_openai_batch", "airflow")


def new_key(prefix: str = "sk-rel") -> str:
    return f"{prefix}-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def no_secret(place: str, text: str | bytes, *keys: str) -> None:
    found = REGISTRY.searched(place, text, keys)
    assert found == 0, f"the API key was found {found} time(s) in {place}"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    levels = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _expect_error(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an error")


def _error_texts(errors: list[BaseException]) -> str:
    parts = []
    for error in errors:
        parts += [str(error), repr(error), str(pickle.loads(pickle.dumps(error)))]
        if isinstance(error, OpenAIBatchAPIError):
            parts += [str(v) for v in vars(error).values()]
    return "\n".join(parts)


def test_every_hook_call_at_debug_leaks_no_key(
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    key, wrong = new_key(), new_key("sk-wrong")
    errors: list[BaseException] = []
    with EmulatorServer(api_key=key, phase_seconds=0.02) as emu:
        set_connection(monkeypatch, emu.base_url, api_key=key, max_retries=2)
        set_connection(monkeypatch, emu.base_url, api_key=wrong, conn_id="openai_wrong", max_retries=0)
        hook = OpenAIBatchHook()
        # Faults make the hook log its warnings and retries too.
        emu.faults.add("POST /v1/files", "status", status=500, times=1)
        emu.faults.add("GET /v1/batches/{id}", "drop", times=1)
        emu.faults.add("GET /v1/batches", "status", status=429, retry_after_ms=10, times=1)
        uploaded = hook.upload_file(io.BytesIO(jsonl(2)), filename="secret.jsonl")
        batch = hook.create_batch(input_file_id=uploaded.id, endpoint=ENDPOINT, metadata={"emulator": "hold"})
        hook.retrieve_batch(batch.id)
        list(hook.iter_batches(max_items=5))
        hook.cancel_batch(batch.id)
        hook.download_file(uploaded.id, tmp_path / "copy.jsonl")
        list(hook.iter_file_lines(uploaded.id))
        assert hook.test_connection()[0]

        async def async_calls() -> None:
            ahook = OpenAIBatchHook()
            try:
                await ahook.aretrieve_batch(batch.id)
                await ahook.acancel_batch(batch.id)
            finally:
                await ahook.aclose()
            bad = OpenAIBatchHook("openai_wrong")
            try:
                errors.append(await _aexpect(bad.aretrieve_batch(batch.id)))
            finally:
                await bad.aclose()

        asyncio.run(async_calls())
        emu.faults.add("GET /v1/batches/{id}", "status", status=503, times=None)
        errors.append(_expect_error(lambda: OpenAIBatchHook(max_retries=1).retrieve_batch(batch.id)))
        emu.faults.clear()
        wrong_hook = OpenAIBatchHook("openai_wrong")
        errors.append(_expect_error(lambda: wrong_hook.retrieve_batch(batch.id)))
        errors.append(_expect_error(lambda: wrong_hook.upload_file(io.BytesIO(b"{}\n"), filename="x.jsonl")))
        ok, message = wrong_hook.test_connection()
        assert not ok
    assert any(isinstance(e, AuthenticationError) for e in errors)
    out, err = capfd.readouterr()
    logs = debug_logs.text + "\n" + "\n".join(r.getMessage() for r in debug_logs.records)
    assert any(r.levelno == logging.DEBUG for r in debug_logs.records), "nothing was logged at DEBUG"
    no_secret("hook logs at DEBUG (urllib3, httpx, httpcore, provider)", logs + out + err, key, wrong)
    no_secret("hook exception texts, reprs and attributes", _error_texts(errors) + message, key, wrong)
    for header in ("Authorization", "Bearer ", "api-key:"):
        assert header not in logs + out + err, f"{header!r} was logged"


async def _aexpect(coro: Any) -> BaseException:
    try:
        await coro
    except BaseException as exc:
        return exc
    raise AssertionError("expected an error")


def test_emulator_401_does_not_echo_the_key() -> None:
    key, wrong = new_key(), new_key("sk-wrong")
    with EmulatorServer(api_key=key) as emu:
        for headers in ({"Authorization": f"Bearer {wrong}"}, {"api-key": wrong}, {"Authorization": wrong}, {}):
            request = urllib.request.Request(f"{emu.base_url}/batches", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=5)
            assert info.value.code == 401
            body = info.value.read()
            no_secret("emulator 401 body", body + str(info.value.headers).encode(), key, wrong)


class _EchoingGateway(BaseHTTPRequestHandler):
    """A misbehaving gateway that puts the request headers (the key included) into every answer."""

    protocol_version = "HTTP/1.1"
    answers: list[tuple[int, str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, ctype, shape = self.answers[0] if self.answers else (500, "application/json", "json")
        echoed = str(dict(self.headers.items()))
        if shape == "json":
            body = json.dumps(
                {"error": {"message": f"upstream said: {echoed}", "type": echoed, "code": echoed, "param": echoed}}
            )
        else:
            body = f"<html><body>proxy debug: {echoed}</body></html>"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingGateway)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "answer",
    [
        (400, "application/json", "json"),
        (401, "application/json", "json"),
        (500, "application/json", "json"),
        (200, "text/html", "html"),
        (502, "text/html", "html"),
    ],
    ids=["400-json", "401-json", "500-json", "200-html", "502-html"],
)
def test_a_gateway_echoing_the_key_is_redacted(
    gateway: str, answer: tuple[int, str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = new_key()
    _EchoingGateway.answers = [answer]
    for api_type in ("openai", "azure"):
        set_connection(monkeypatch, gateway, api_key=key, max_retries=0, api_type=api_type)
        hook = OpenAIBatchHook()
        errors = [
            _expect_error(lambda h=hook: h.retrieve_batch("batch_1")),
            _expect_error(
                lambda h=hook: h.create_batch(input_file_id="file-1", endpoint=ENDPOINT, idempotency_key="k")
            ),
            _expect_error(lambda h=hook: h.download_file("file-1", tmp_path / "x.jsonl")),
        ]
        if answer[0] == 200:
            assert all(isinstance(e, OpenAIBatchAPIError) for e in errors), errors
        no_secret(
            f"errors from a gateway echoing the key ({answer[0]} {answer[2]}, {api_type})", _error_texts(errors), key
        )


def test_reprs_and_trigger_kwargs_hold_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    set_connection(monkeypatch, "http://127.0.0.1:9/v1", api_key=key)
    hook = OpenAIBatchHook()
    settings = hook.settings
    trigger = OpenAIBatchTrigger(conn_id="openai_default", batch_id="batch_1", poll_interval=1)
    path, kwargs = trigger.serialize()
    texts = [repr(settings), str(settings), repr(hook), json.dumps(kwargs), repr(trigger), path]
    no_secret("settings/hook/trigger reprs and trigger kwargs", "\n".join(texts), key)
    assert set(kwargs) >= {"conn_id", "batch_id"} and kwargs["conn_id"] == "openai_default"


def test_tls_verification_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def settings(**extra: Any) -> ConnectionSettings:
        return ConnectionSettings.from_connection_fields(
            "c", host="https://api.openai.com/v1", password="sk-x", extra=json.dumps(extra)
        )

    assert settings().verify_ssl is True
    assert settings(verify_ssl="").verify_ssl is True
    assert settings(verify_ssl=None).verify_ssl is True
    assert settings(verify_ssl="true").verify_ssl is True
    for off in (False, "false", "0", "no", "off"):
        assert settings(verify_ssl=off).verify_ssl is False
    # Environment variables that requests reads must not turn verification off.
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", connection_json("https://127.0.0.1:9/v1", "sk-x"))
    assert OpenAIBatchHook().session.verify is True
    context = tls_context(True)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A one-day certificate for 127.0.0.1, made with ``cryptography`` (installed with Airflow)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    cert, key = _self_signed_certificate(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps({"object": "list", "data": [], "has_more": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # asked for, in the last step
def test_an_untrusted_certificate_is_refused_unless_verification_is_turned_off(
    tls_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, tls_server, max_retries=0)
    with pytest.raises(APIConnectionError, match=r"SSL|certificate|CERTIFICATE"):
        OpenAIBatchHook().list_batches(limit=1)

    async def alist() -> Any:
        hook = OpenAIBatchHook()
        try:
            return await hook._asend_json(ApiRequest("GET", "/batches"))
        finally:
            await hook.aclose()

    with pytest.raises(APIConnectionError):
        asyncio.run(alist())
    # Off only when asked, and then off even with a CA bundle in the environment (as on this host).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    set_connection(monkeypatch, tls_server, max_retries=0, verify_ssl=False)
    assert list(OpenAIBatchHook().list_batches(limit=1).data) == []

    async def alist_unverified() -> Any:
        hook = OpenAIBatchHook()
        try:
            return await hook._asend_json(ApiRequest("GET", "/batches"))
        finally:
            await hook.aclose()

    assert asyncio.run(alist_unverified())["data"] == []


@pytest.mark.slow
def test_dag_run_leaks_the_key_nowhere(tmp_path: Path) -> None:
    """``dag.test()`` of create -> deferred sensor -> download (+ a task with a wrong key), all at DEBUG, in a
    subprocess with its own AIRFLOW_HOME; then every log line, exception, XCom, trigger row, rendered field
    and the whole database is searched for both keys."""
    key, wrong = new_key(), new_key("sk-wrong")
    home, dags = tmp_path / "home", tmp_path / "dags"
    dags.mkdir()
    shutil.copy(HERE / "secret_dag_run.py", dags / "secret_dag_run.py")
    source = write(tmp_path / "input.jsonl", jsonl(3))
    with EmulatorServer(api_key=key, phase_seconds=0.05) as emu:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_CONN_OPENAI_DEFAULT": connection_json(emu.base_url, key),
            "AIRFLOW_CONN_OPENAI_WRONG": connection_json(emu.base_url, wrong, max_retries=0),
            "REL_INPUT": str(source),
            "REL_OUT": str(tmp_path / "out"),
        }
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, timeout=240
        )
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        run = subprocess.run(
            [sys.executable, str(dags / "secret_dag_run.py")], env=env, capture_output=True, timeout=240
        )
    output = run.stdout + run.stderr
    result = [line for line in run.stdout.decode().splitlines() if line.startswith("RESULT ")]
    assert result, output[-3000:].decode(errors="replace")
    states = json.loads(result[-1][len("RESULT ") :])["tasks"]
    assert states == {"create": "success", "wait": "success", "download": "success", "wrong_key": "failed"}
    assert b"Incorrect API key" in output  # the wrong key's 401 is in the logs, explained, without the key

    # Airflow's in-process test supervisor (dag.test only) logs each MaskSecret request with its value at DEBUG;
    # the real supervisor omits it. That is Airflow's, not the provider's: left out, and counted separately.
    lines = output.splitlines()
    upstream = [line for line in lines if b"Sending request" in line and b"MaskSecret(" in line]
    if upstream:
        REGISTRY.notes.append(
            f"Airflow upstream (dag.test only): InProcessSupervisorComms logs MaskSecret values at DEBUG "
            f"({len(upstream)} line(s) left out of the search)"
        )
    logs = b"\n".join(line for line in lines if line not in upstream)
    no_secret("dag.test task/trigger logs at DEBUG (stdout+stderr)", logs, key, wrong)
    for path in sorted(p for p in home.rglob("*") if p.is_file() and p.name != "airflow.db"):
        no_secret(f"AIRFLOW_HOME file {path.relative_to(home)}", path.read_bytes(), key, wrong)

    db = sqlite3.connect(home / "airflow.db")
    try:
        for table, column in (
            ("xcom", "value"),
            ("trigger", "kwargs"),
            ("rendered_task_instance_fields", "rendered_fields"),
            ("task_instance", "next_kwargs"),
        ):
            rows = db.execute(f"SELECT {column} FROM {table}").fetchall()
            no_secret(f"{table}.{column} ({len(rows)} rows)", repr(rows), key, wrong)
        assert db.execute("SELECT count(*) FROM xcom").fetchone()[0] > 0
        assert db.execute("SELECT count(*) FROM rendered_task_instance_fields").fetchone()[0] == 4
        no_secret("the whole Airflow database (SQL dump)", "\n".join(db.iterdump()), key, wrong)
    finally:
        db.close()
    no_secret("the database file, raw bytes", (home / "airflow.db").read_bytes(), key, wrong)
