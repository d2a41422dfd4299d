"""Airflow 3 in its production topology on loopback: PostgreSQL, CeleryExecutor on Redis, two Celery workers,
two triggerers, the api-server, scheduler and dag-processor, plus the emulator (with its request log).

PostgreSQL and Redis are Debian's packages (``postgresql``, ``redis-server``; ``.ci/run`` installs them),
started here on free loopback ports from their binaries: the system services are never used. PostgreSQL refuses
to run as root, so under root its data directory belongs to the ``postgres`` user the package creates and the
server runs as that user. Every process this module starts leads a session of its own; stopping one kills its
whole session, which also reaches the task processes a Celery worker forks into process groups of their own.
Everything listens on 127.0.0.1 only (PostgreSQL's socket is in its own folder), and no log server is started.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests._kit.e2e_stack import AirflowStack, Proc, _decrypt_kwargs, free_port

#: How to get the servers this stack starts, said by every error about them.
INSTALL_HINT = "install Debian's packages: apt-get install -y postgresql redis-server (.ci/run does)"
WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer", "triggerer-b")
#: The emulator's ``--verbose`` lines: ``[emulator] 127.0.0.1 "POST /v1/batches HTTP/1.1" 200 -``.
REQUEST_LINE = re.compile(r'^\[emulator\] \S+ "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) ')


class StackError(RuntimeError):
    """A bounded wait ran out, or a server did not start: the message carries the relevant logs."""


# -- processes and their sessions ----------------------------------------------------------------------


def session_pids(sid: int) -> list[int]:
    """Every process of session ``sid`` (its leader's pid), read from ``/proc``: the leader, its children, the
    task processes a worker forks into process groups of their own, and any orphan re-parented to init."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def signal_session(sid: int, sig: int) -> int:
    """Send ``sig`` to every process of session ``sid``; returns how many there were."""
    pids = session_pids(sid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(pids)


def alive_in_session(sid: int) -> list[int]:
    """The processes of session ``sid`` that are not zombies (a zombie is dead, waiting to be reaped)."""
    alive = []
    for pid in session_pids(sid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(pid)
    return alive


def stop_sessions(popens: list[subprocess.Popen[bytes]], *, first: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Send ``first`` to every process of each session at once, SIGKILL what is left after ``grace`` seconds, and
    reap the leaders. Safe to call again."""
    live = [p for p in popens if p.returncode is None]
    for popen in live:
        signal_session(popen.pid, first)
        signal_session(popen.pid, signal.SIGCONT)  # a frozen process acts on the signal only once it runs
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive_in_session(p.pid) for p in live):
        for popen in live:
            popen.poll()
        time.sleep(0.2)
    for popen in live:
        signal_session(popen.pid, signal.SIGKILL)
    for popen in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=10)


def wait_until(
    what: str, check: Callable[[], bool], *, timeout: float, logs: Callable[[], str], interval: float = 0.25
) -> None:
    """Poll ``check`` until it is true; after ``timeout`` seconds raise :class:`StackError` with ``logs()``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not after {timeout:g}s\n{logs()}")
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


#: /proc/net/tcp{,6} local addresses that are loopback: 127.0.0.1, ::1 and ::ffff:127.0.0.1.
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listening_sockets(pids: list[int]) -> list[tuple[int, str]]:
    """``(pid, local address in /proc/net/tcp hex)`` of every TCP socket in LISTEN the processes ``pids`` hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.append((inodes[cols[9]], cols[1]))
    return found


# -- PostgreSQL and Redis ------------------------------------------------------------------------------


def postgres_bin(name: str) -> str:
    """A PostgreSQL server binary of the newest version Debian installed (``/usr/lib/postgresql/*/bin``)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StackError(f"no /usr/lib/postgresql/*/bin/{name}: {INSTALL_HINT}")
    return found[-1]


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth, no fsync), its socket in its folder."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="airflow-prod-pg-")))
    port: int = field(default_factory=free_port)
    database: str = "airflow"
    user: str = "airflow"
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self) -> dict[str, Any]:
        """Run as the ``postgres`` user under root (the server refuses root), else as ourselves."""
        if os.geteuid() != 0:
            return {}
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise StackError(f"running as root but there is no 'postgres' user: {INSTALL_HINT}") from None
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        as_owner = self._as_owner()
        if as_owner:
            os.chown(self.root, as_owner["user"], as_owner["group"])
        self.root.chmod(0o700)
        initdb = [postgres_bin("initdb"), "-D", str(self.root / "data"), "-U", self.user, "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        with (self.root / "initdb.log").open("wb") as log:
            done = subprocess.run(initdb, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False, **as_owner)
        if done.returncode != 0:
            raise StackError(f"initdb failed ({done.returncode}):\n{tail(self.root / 'initdb.log')}")
        server = [postgres_bin("postgres"), "-D", str(self.root / "data"), "-p", str(self.port)]
        server += ["-k", str(self.root), "-h", "127.0.0.1"]
        for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=250"):
            server += ["-c", setting]
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                server, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root, **as_owner
            )
        wait_until(f"PostgreSQL on 127.0.0.1:{self.port}", self._created, timeout=timeout, logs=self.diagnostics)

    def _created(self) -> bool:
        """True once the server answers and the database exists (created on the first answer)."""
        import psycopg2

        if self.popen is not None and self.popen.poll() is not None:
            raise StackError(f"PostgreSQL exited ({self.popen.returncode}):\n{self.diagnostics()}")
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        except psycopg2.OperationalError:
            return False
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()
        return True

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.database)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def diagnostics(self) -> str:
        return f"--- postgres ({self.root}) ---\n{tail(self.log_path)}"

    def stop(self) -> None:
        if self.popen is not None:
            stop_sessions([self.popen], first=signal.SIGINT, grace=15.0)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Redis:
    """A Redis server on a free loopback port, nothing persisted."""

    root: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise StackError(f"no redis-server: {INSTALL_HINT}")
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.root), "--daemonize", "no", "--protected-mode", "yes"]
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(f"Redis on 127.0.0.1:{self.port}", self._pong, timeout=timeout, logs=self.diagnostics)

    def _pong(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise StackError(f"Redis exited ({self.popen.returncode}):\n{self.diagnostics()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def diagnostics(self) -> str:
        return f"--- redis ---\n{tail(self.log_path)}"

    def stop(self) -> None:
        if self.popen is not None:
            stop_sessions([self.popen], grace=10.0)


# -- the emulator's request log ------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorRequest:
    method: str
    path: str  # without the query string
    status: int


def emulator_requests(log_path: Path) -> list[EmulatorRequest]:
    """Every request the emulator answered, in order, from its ``--verbose`` log."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = REQUEST_LINE.match(line)
        if match:
            out.append(EmulatorRequest(match["method"], match["path"].split("?", 1)[0], int(match["status"])))
    return out


def batch_creates(requests: list[EmulatorRequest]) -> int:
    """``POST /v1/batches`` answered 200: batches created (each one billed)."""
    return sum(1 for r in requests if r.method == "POST" and r.path == "/v1/batches" and r.status == 200)


def cancelled_batches(requests: list[EmulatorRequest]) -> list[str]:
    """Batch ids of every ``POST /v1/batches/{id}/cancel`` request, whatever its answer."""
    return [r.path.split("/")[3] for r in requests if r.method == "POST" and r.path.endswith("/cancel")]


def content_downloads(requests: list[EmulatorRequest]) -> list[str]:
    """File ids of every ``GET /v1/files/{id}/content`` answered 200, in order."""
    return [
        r.path.split("/")[3]
        for r in requests
        if r.method == "GET" and r.path.startswith("/v1/files/") and r.path.endswith("/content") and r.status == 200
    ]


# -- the stack -----------------------------------------------------------------------------------------


@dataclass
class ProductionStack(AirflowStack):
    """:class:`AirflowStack` on PostgreSQL with the CeleryExecutor (Redis), the Celery workers :data:`WORKERS` and
    the triggerers :data:`TRIGGERERS`. The emulator logs every request (``--verbose``): :meth:`requests` reads it."""

    worker_concurrency: int = 4
    #: Seconds without a task heartbeat before the scheduler fails the try (a killed worker's task).
    heartbeat_timeout: int = 30
    postgres: Postgres | None = None
    redis: Redis | None = None
    #: Triggerer process key -> its job id in the ``job`` table.
    triggerer_jobs: dict[str, int] = field(default_factory=dict)

    def start(self, ready_timeout: float = 240.0) -> None:
        atexit.register(self.stop)
        started = time.monotonic()
        self.emulator_args = ("--verbose", *self.emulator_args)
        self.home.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres()
        self.postgres.start()
        self.redis = Redis(self.home / "redis")
        self.redis.start()
        try:
            super().start(ready_timeout=ready_timeout)  # emulator, db migrate, api-server, scheduler, ...
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise StackError(f"Airflow did not start: {exc}\n{self.diagnostics()}") from exc
        left = max(60.0, ready_timeout - (time.monotonic() - started))
        self._await_triggerer("triggerer", timeout=left)
        self.start_triggerer("triggerer-b", timeout=left)
        for key in WORKERS:
            self.start_worker(key)
        for key in WORKERS:
            self.await_worker(key, timeout=left)

    def _build_env(self) -> dict[str, str]:
        env = super()._build_env()
        assert self.postgres is not None and self.redis is not None
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                # A killed worker holds no message but the one it runs (acks late: never delivered twice).
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__API__WORKERS": "2",
            }
        )
        return env

    # -- components --------------------------------------------------------------------------------

    def _next_log(self, key: str) -> None:
        """A component started again under the same key writes a fresh log file (``key.N.log``)."""
        if key in self.procs:
            self._restarts += 1

    def start_worker(self, key: str) -> Proc:
        self._next_log(key)
        args = ["--celery-hostname", f"{key}@127.0.0.1", "--concurrency", str(self.worker_concurrency)]
        args += ["--pid", str(self.home / f"{key}.pid"), "--skip-serve-logs", "--without-gossip", "--without-mingle"]
        return self.start_component("celery", key=key, args=["worker", *args])

    def await_worker(self, key: str, timeout: float = 120.0) -> None:
        proc = self.procs[key]
        wait_until(
            f"Celery {key} ready",
            lambda: self._alive_or_raise(key) and " ready." in proc.log_path.read_text(errors="replace"),
            timeout=timeout,
            logs=self.diagnostics,
        )

    def start_component(
        self, name: str, key: str | None = None, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> Proc:
        if name == "triggerer" and "--skip-serve-logs" not in args:
            # Airflow's log server binds every interface (0.0.0.0 and [::], not configurable), so no component
            # starts it: the api-server reads task and trigger logs from the shared AIRFLOW_HOME/logs.
            args = [*args, "--skip-serve-logs"]
        return super().start_component(name, key=key, env=env, args=args)

    def start_triggerer(self, key: str, timeout: float = 120.0) -> Proc:
        self._next_log(key)
        proc = self.start_component("triggerer", key=key)
        self._await_triggerer(key, timeout=timeout)
        return proc

    def _await_triggerer(self, key: str, timeout: float) -> None:
        """Wait for the triggerer's job row (running, heartbeating) and remember its id."""
        known = set(self.triggerer_jobs.values())
        found: list[int] = []

        def new_job() -> bool:
            self._alive_or_raise(key)
            rows = self.sql("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id")
            found[:] = [row[0] for row in rows if row[0] not in known]
            return len(found) == 1

        wait_until(f"triggerer {key} heartbeating", new_job, timeout=timeout, logs=self.diagnostics)
        self.triggerer_jobs[key] = found[0]

    def _alive_or_raise(self, key: str) -> bool:
        proc = self.procs[key]
        if not proc.alive():
            raise StackError(f"{key} exited ({proc.popen.returncode}):\n{proc.tail()}")
        return True

    def sigkill(self, key: str) -> int:
        """SIGKILL every process of a component's session at once (the worker, its pool and its task processes);
        returns how many there were."""
        proc = self.procs[key]
        killed = signal_session(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)
        wait_until(
            f"every process of {key} gone",
            lambda: not alive_in_session(proc.popen.pid),
            timeout=10,
            logs=lambda: str(alive_in_session(proc.popen.pid)),
        )
        return killed

    def revive(self, key: str) -> None:
        """Start a worker or triggerer again under its key if it is not running (after a scenario killed it)."""
        if self.procs[key].alive():
            return
        if key in WORKERS:
            self.start_worker(key)
            self.await_worker(key)
        else:
            self.start_triggerer(key)

    def _check_alive(self) -> None:
        """Only the components that must always run: a worker or triggerer a scenario killed is expected dead."""
        for key, proc in self.procs.items():
            if key not in WORKERS and key not in TRIGGERERS and not proc.alive():
                raise StackError(f"airflow {key} exited ({proc.popen.returncode}):\n{proc.tail()}")

    # -- reading back ------------------------------------------------------------------------------

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.postgres is not None
        return self.postgres.query(query, params)

    def trigger_assignments(self) -> list[tuple[int, str, str, int | None]]:
        """``(id, classpath, created_date, triggerer_id)`` of every trigger row."""
        rows = self.sql("SELECT id, classpath, created_date::text, triggerer_id FROM trigger ORDER BY id")
        return [(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]

    def trigger_rows(self) -> list[tuple[int, str, str]]:
        """``(id, classpath, kwargs)`` of the trigger table, kwargs decrypted as Airflow stores them."""
        from cryptography.fernet import Fernet

        fernet = Fernet(self.fernet_key.encode())
        rows = self.sql("SELECT id, classpath, kwargs::text FROM trigger ORDER BY id")
        return [(int(r[0]), str(r[1]), _decrypt_kwargs(str(r[2]), fernet)) for r in rows]

    def triggerer_key(self, job_id: int | None) -> str | None:
        return next((key for key, job in self.triggerer_jobs.items() if job == job_id), None)

    def requests(self) -> list[EmulatorRequest]:
        """The emulator's request log so far."""
        assert self.emulator is not None
        return emulator_requests(self.emulator.log_path)

    def log_files(self) -> list[Path]:
        """Every log file the stack wrote: Airflow's (tasks, triggers, dag-processor), each process's output, the
        emulator's, PostgreSQL's and Redis's."""
        roots = [self.home]
        if self.postgres is not None:
            roots.append(self.postgres.root)
        files: list[Path] = []
        for root in roots:
            for dirpath, _dirs, names in os.walk(root):
                files.extend(Path(dirpath, n) for n in names if n.endswith(".log") or ".log." in n)
        return sorted(files)

    def sessions(self) -> dict[str, int]:
        """Session id (its leader's pid) of every process this stack started and that still runs, by name."""
        popens = {key: proc.popen for key, proc in self.procs.items()}
        if self.emulator is not None:
            popens["emulator"] = self.emulator.popen
        for name, service in (("postgres", self.postgres), ("redis", self.redis)):
            if service is not None and service.popen is not None:
                popens[name] = service.popen
        return {key: popen.pid for key, popen in popens.items() if popen.poll() is None}

    def listening_beyond_loopback(self) -> list[str]:
        """``name pid address`` of every listening TCP socket a process of the stack holds on another address than
        loopback (none is expected); also returns how many it checked in the last item, as ``checked N``."""
        out, checked = [], 0
        for name, sid in self.sessions().items():
            for pid, address in listening_sockets(session_pids(sid)):
                checked += 1
                if address.rsplit(":", 1)[0] not in LOOPBACK:
                    out.append(f"{name} {pid} {address}")
        return [*out, f"checked {checked}"]

    def diagnostics(self) -> str:
        parts = [super().diagnostics()]
        migrate = self.proc_logs_dir / "db-migrate.log"
        if migrate.exists():
            parts.append(f"--- db-migrate ---\n{tail(migrate, 15)}")
        parts += [s.diagnostics() for s in (self.postgres, self.redis) if s is not None]
        return "\n".join(parts)

    # -- teardown ----------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        stop_sessions([proc.popen for proc in self.procs.values()], grace=5.0)
        if self.emulator is not None:
            stop_sessions([self.emulator.popen], grace=5.0)
        for service in (self.redis, self.postgres):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[ProductionStack]:
        try:
            self.start()
            yield self
        finally:
            self.stop()
