"""Helpers shared by the benchmark drivers and their worker processes (standard library only)."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-bench"
OURS = "ours"
OFFICIAL = "official"
IMPLS = (OURS, OFFICIAL)
#: Connection ids the workers use; their URIs come from the environment (AIRFLOW_CONN_*).
OUR_CONN_ID = "bench_ours"
OFFICIAL_CONN_ID = "bench_official"


# -- processes and servers ------------------------------------------------------------------------


class Server:
    """A server in its own process (so that its threads never compete with the measured process)."""

    def __init__(self, args: Sequence[str], *, banner: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+/v1)", line)
        if banner not in line or not match:
            self.stop()
            raise RuntimeError(f"{args[1] if len(args) > 1 else args} did not start: {line!r}")
        self.base_url = match.group(1)
        self.root = self.base_url[: -len("/v1")]
        # Keep reading whatever else it prints, so that a full pipe never blocks it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def control(self, path: str) -> Any:
        method = "POST" if "reset" in path else "GET"
        request = urllib.request.Request(self.root + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connection_env(base_url: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables for both providers, pointing at ``base_url``."""
    ours = {"conn_type": "openai_batch", "password": API_KEY, "host": base_url}
    official = {
        "conn_type": "openai",
        "password": API_KEY,
        "host": base_url,
        "extra": {"openai_client_kwargs": {"base_url": base_url}},
    }
    return {
        f"AIRFLOW_CONN_{OUR_CONN_ID.upper()}": json.dumps(ours),
        f"AIRFLOW_CONN_{OFFICIAL_CONN_ID.upper()}": json.dumps(official),
    }


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(ROOT / ".bench-airflow-home"))
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONTRACEMALLOC", None)
    env.update(extra or {})
    return env


def run_worker(
    module: str, args: Sequence[str], *, env: dict[str, str], timeout: float, workdir: Path
) -> dict[str, Any]:
    """Run ``python -m module args --out FILE`` and return the JSON object it wrote to FILE.

    The worker's own output (Airflow logs every poll to stdout) goes to a log file in ``workdir``, so that
    the measured process never blocks on a pipe; its tail is shown when the worker fails.
    """
    fd, out_name = tempfile.mkstemp(prefix=module.rsplit(".", 1)[-1] + "-", suffix=".json", dir=workdir)
    os.close(fd)
    log_path = Path(out_name).with_suffix(".log")
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args, "--out", out_name],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
    text = Path(out_name).read_text()
    if proc.returncode != 0 or not text.strip():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{module} {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(text)
    result.setdefault("_elapsed", time.monotonic() - started)
    os.unlink(out_name)
    os.unlink(log_path)
    return result


def write_result(path: str, result: dict[str, Any]) -> None:
    """What a worker does last: write its JSON result (atomically enough for one reader)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as out:
        json.dump(result, out)
    os.replace(tmp, path)


# -- memory ---------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


# -- statistics -----------------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
