"""A real Airflow 3 (api-server, scheduler, dag-processor, triggerer) plus the emulator, on loopback.

Everything runs as subprocesses in their own process groups, with a private ``AIRFLOW_HOME`` (SQLite,
LocalExecutor) and ``DAGS_FOLDER`` = the repository's ``example_dags/``. :meth:`AirflowStack.stop`
kills every group it started; an ``atexit`` hook calls it too, so nothing outlives the test session.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from airflow_provider_openai_batch.emulator.launch import command, launch

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "example_dags"
EXAMPLE_DAG_IDS = (
    "openai_batch_chat",
    "openai_batch_wait_in_create",
    "openai_batch_mapped",
    "openai_batch_cancel",
    "openai_batch_embeddings",
)
#: Ports Airflow itself uses by default (worker and triggerer log servers): never hand them out.
RESERVED_PORTS = {8080, 8793, 8794}
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def kill_group(popen: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within ``grace`` seconds."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
            os.killpg(popen.pid, signal.SIGCONT)  # a frozen group acts on SIGTERM only once it runs again
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)
    # Children (task runners, gunicorn/uvicorn workers) may outlive the leader: kill the whole group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)


@dataclass
class AirflowStack:
    home: Path
    api_key: str = field(default_factory=lambda: "sk-e2e-" + secrets.token_hex(16))
    phase_seconds: float = 0.25
    poll_interval: float = 0.25
    procs: dict[str, Proc] = field(default_factory=dict)
    emulator: Proc | None = None
    emulator_url: str = ""
    api_port: int = 0
    fernet_key: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: The Python that runs Airflow and the emulator (another venv, e.g. one with the built wheel installed).
    python: str = sys.executable
    dags_folder: Path = DAGS_FOLDER
    expected_dag_ids: tuple[str, ...] = EXAMPLE_DAG_IDS
    #: False: no ``openai_default`` from the environment (a test creates it, e.g. through the UI form).
    env_connection: bool = True
    #: True: one ``admin`` user who logs in with a generated password (instead of "everyone is admin").
    login: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    #: More command-line options for the emulator (e.g. ``("--enqueued-request-limit", "20")``).
    emulator_args: tuple[str, ...] = ()
    #: More extras on the ``openai_default`` connection.
    connection_extra: dict[str, Any] = field(default_factory=dict)
    _token: str = ""
    _http: requests.Session = field(default_factory=requests.Session)
    _restarts: int = 0
    _stopped: bool = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def proc_logs_dir(self) -> Path:
        return self.home / "process-logs"

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, ready_timeout: float = 150.0) -> None:
        atexit.register(self.stop)
        self._http.trust_env = False  # loopback only: never through a proxy from the environment
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc_logs_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self._start_emulator()
        self.api_port = free_port()
        self.fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.env = self._build_env()
        started = time.monotonic()
        subprocess.run(
            [self.python, "-m", "airflow", "db", "migrate"],
            env=self.env,
            check=True,
            stdout=(self.proc_logs_dir / "db-migrate.log").open("wb"),
            stderr=subprocess.STDOUT,
            timeout=180,
        )
        for name in COMPONENTS:
            self.start_component(name)
        self._wait_ready(deadline=started + ready_timeout)

    def _start_emulator(self) -> None:
        log_path = self.proc_logs_dir / "emulator.log"
        with log_path.open("wb") as log:
            try:
                argv = command(
                    python=self.python,
                    api_key=self.api_key,
                    phase_seconds=self.phase_seconds,
                    data_dir=self.home / "emulator-data",
                    options=self.emulator_args,
                )
                started = launch(argv, stderr=log)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{log_path.read_text(errors='replace')[-4000:]}") from None
        self.emulator = Proc("emulator", started.popen, log_path)
        self.emulator_url = started.base_url

    def _build_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "PYTEST_", "OPENAI_"))
            and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
        }
        connection = {
            "conn_type": "openai_batch",
            "host": self.emulator_url,
            "password": self.api_key,
            "extra": {"backoff_factor": 0.05, "backoff_max": 0.5, **self.connection_extra},
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                "OPENAI_BATCH_POLL_INTERVAL": str(self.poll_interval),
                "OPENAI_BATCH_EXAMPLES_DIR": str(self.data_dir),
                "OPENAI_BATCH_EXAMPLES_EMULATOR": "1",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.env_connection:
            env["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(connection)
        if self.login:
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin"
        env.update(self.extra_env)
        return env

    @property
    def admin_password(self) -> str:
        """The ``admin`` user's password, which the API server generates into ``AIRFLOW_HOME`` (``login=True``)."""
        generated = self.home / "simple_auth_manager_passwords.json.generated"
        return str(json.loads(generated.read_text())["admin"])

    def start_component(
        self, name: str, key: str | None = None, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> Proc:
        """Start ``airflow <name> <args...>``; ``key`` (default ``name``) names a second instance, e.g. another
        triggerer, and ``env`` overrides its environment (its own log-server port, say)."""
        key = key or name
        suffix = f".{self._restarts}" if key in self.procs else ""
        log_path = self.proc_logs_dir / f"{key}{suffix}.log"
        popen = subprocess.Popen(
            [self.python, "-m", "airflow", name, *args],
            env={**self.env, **(env or {})},
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.home,
        )
        self.procs[key] = Proc(key, popen, log_path)
        return self.procs[key]

    def freeze_component(self, key: str) -> None:
        """SIGSTOP a component's whole process group: it stops heartbeating, as a hung or partitioned host."""
        os.killpg(self.procs[key].popen.pid, signal.SIGSTOP)

    def thaw_component(self, key: str) -> None:
        os.killpg(self.procs[key].popen.pid, signal.SIGCONT)

    def restart_component(self, name: str) -> Proc:
        """Stop a component gracefully (SIGTERM, as a deploy would) and start a fresh one."""
        kill_group(self.procs[name].popen, grace=30.0)
        self._restarts += 1
        return self.start_component(name)

    @contextlib.contextmanager
    def running(self) -> Iterator[AirflowStack]:
        """Started, and stopped on the way out whatever happens (the body of a module's fixture)."""
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for proc in list(self.procs.values()):
            kill_group(proc.popen)
        if self.emulator is not None:
            kill_group(self.emulator.popen, grace=5.0)

    def _check_alive(self) -> None:
        for proc in self.procs.values():
            if not proc.alive():
                raise RuntimeError(f"airflow {proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")

    def _wait_ready(self, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                dags = {d["dag_id"] for d in self.api("GET", "/api/v2/dags", params={"limit": 100})["dags"]}
                healthy = all(
                    (health.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                )
                if healthy and set(self.expected_dag_ids) <= dags:
                    return
                last_error = RuntimeError(f"not ready yet: health={health}, dags={sorted(dags)}")
            except (requests.RequestException, RuntimeError, OSError, KeyError, ValueError) as exc:
                last_error = exc  # OSError/KeyError/ValueError: the generated password file is not written yet
            time.sleep(0.5)
        errors = self.api("GET", "/api/v2/importErrors") if self.procs["api-server"].alive() else None
        raise RuntimeError(f"Airflow was not ready in time: {last_error}; import errors: {errors}")

    # -- REST API --------------------------------------------------------------------------------

    def token(self) -> str:
        if not self._token:
            if self.login:
                credentials = {"username": "admin", "password": self.admin_password}
                resp = self._http.post(f"{self.api_url}/auth/token", json=credentials, timeout=10)
            else:
                resp = self._http.get(f"{self.api_url}/auth/token", timeout=10)
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        # A GET is read again once if the API server (one worker, SQLite) was too busy to answer in time on a
        # loaded machine; nothing else is resent.
        attempts = 2 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                resp = self._http.request(method, f"{self.api_url}{path}", headers=headers, timeout=30, **kwargs)
                break
            except requests.Timeout:
                if attempt == attempts:
                    raise
        if resp.status_code not in expect:
            raise RuntimeError(f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self.unpause(dag_id)
        body = {"logical_date": None, "conf": conf or {}}
        return str(self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list(data["task_instances"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        entry = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": True},
        )
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log for one try, through the REST API (structured lines joined as JSON text)."""
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        resp = self._http.get(
            f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers=headers,
            timeout=30,
        )
        resp.raise_for_status()
        content = resp.json().get("content")
        if isinstance(content, list):
            return "\n".join(item if isinstance(item, str) else json.dumps(item) for item in content)
        return str(content)

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 120.0,
        on_poll: Callable[[list[dict[str, Any]]], None] | None = None,
        interval: float = 0.5,
    ) -> str:
        """Poll until the run is terminal; ``on_poll`` sees the task instances at every poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if on_poll is not None:
                on_poll(self.task_instances(dag_id, run_id))
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            time.sleep(interval)
        states = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
        raise TimeoutError(f"{dag_id} {run_id} not finished after {timeout}s: {states}\n{self.diagnostics()}")

    def wait_for_ti_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], *, timeout: float = 90.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        ti: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            ti = self.task_instance(dag_id, run_id, task_id)
            if ti["state"] in states:
                return ti
            time.sleep(0.2)
        raise TimeoutError(f"{task_id} never reached {states} (last {ti.get('state')})\n{self.diagnostics()}")

    def failed_task_logs(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """The last lines of every log file of the run's failed tasks, so that a failed assertion says why."""
        failed = {ti["task_id"] for ti in self.task_instances(dag_id, run_id) if ti["state"] == "failed"}
        folder = self.logs_dir / f"dag_id={dag_id}" / f"run_id={run_id}"
        parts = []
        for task_id in sorted(failed):
            for path in sorted((folder / f"task_id={task_id}").rglob("*.log")):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.relative_to(folder)} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(25)}" for p in self.procs.values())

    # -- emulator --------------------------------------------------------------------------------

    def emulator_get(self, path: str, **params: Any) -> Any:
        resp = self._http.get(
            f"{self.emulator_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()

    def freeze_emulator(self) -> None:
        """SIGSTOP the emulator: every request to it waits (up to the clients' read timeout) until it is thawed."""
        assert self.emulator is not None
        os.killpg(self.emulator.popen.pid, signal.SIGSTOP)

    def thaw_emulator(self) -> None:
        assert self.emulator is not None
        os.killpg(self.emulator.popen.pid, signal.SIGCONT)

    def emulator_log(self) -> list[str]:
        """The emulator's log lines (with ``--verbose`` in ``emulator_args``: one per request it answered)."""
        assert self.emulator is not None
        return self.emulator.log_path.read_text(errors="replace").splitlines()

    def emulator_batches(self) -> list[dict[str, Any]]:
        batches: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.emulator_get("/batches", limit=100, **({"after": after} if after else {}))
            batches.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return batches
            after = page["data"][-1]["id"]

    def emulator_files(self) -> list[dict[str, Any]]:
        return list(self.emulator_get("/files", limit=10000)["data"])

    # -- looking for the secret ------------------------------------------------------------------

    def trigger_rows(self) -> list[tuple[int, str, str]]:
        """``(id, classpath, kwargs)`` of the trigger table, kwargs decrypted as Airflow stores them."""
        from cryptography.fernet import Fernet

        fernet = Fernet(self.fernet_key.encode())
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as db:
            rows = db.execute("SELECT id, classpath, kwargs FROM trigger").fetchall()
        out = []
        for trigger_id, classpath, kwargs in rows:
            text = kwargs if isinstance(kwargs, str) else bytes(kwargs).decode("utf-8", "replace")
            out.append((trigger_id, classpath, _decrypt_kwargs(text, fernet)))
        return out

    def trigger_assignments(self) -> list[tuple[int, str, str, int | None]]:
        """``(id, classpath, created_date, triggerer_id)`` of every trigger row."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as db:
            return list(db.execute("SELECT id, classpath, created_date, triggerer_id FROM trigger").fetchall())

    def files_containing(self, needle: str, roots: list[Path]) -> list[str]:
        hits = []
        raw = needle.encode()
        for root in roots:
            for path in _walk(root):
                with contextlib.suppress(OSError):
                    if raw in path.read_bytes():
                        hits.append(str(path))
        return hits


def _decrypt_kwargs(text: str, fernet: Any) -> str:
    """Trigger kwargs are JSON with encrypted payloads (Airflow 3 encrypts them); return the plain JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    if isinstance(data, str):
        with contextlib.suppress(Exception):
            return fernet.decrypt(data.encode()).decode()
        return data
    if isinstance(data, dict) and "encrypted" in data:
        return fernet.decrypt(str(data["encrypted"]).encode()).decode()
    return json.dumps(data)


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name
