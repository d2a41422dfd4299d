"""``make demo``: run the ``openai_batch_chat`` example DAG once and print what it produced.

Against the local emulator by default: the emulator is started on a free loopback port and
``openai_default`` points at it. When ``AIRFLOW_CONN_OPENAI_DEFAULT`` is already set, that connection
(a real OpenAI, Azure OpenAI or gateway account) is used instead, and real batches are billed and can
take up to 24 hours.

Airflow runs with a private ``AIRFLOW_HOME`` (``.airflow-demo/`` in the repository, a SQLite database
migrated on the first run) and the DAG is executed in this process with ``dag.test()``, which runs the
deferred sensor's trigger inline. Results are written under ``demo-output/``.

Usage: ``python -m example_dags.demo [--verbose] [--phase-seconds S]``
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO / "example_dags"
AIRFLOW_HOME = REPO / ".airflow-demo"
OUTPUT_DIR = REPO / "demo-output"
DAG_ID = "openai_batch_chat"
EMULATOR_KEY = "sk-emulator"


class Emulator:
    """The emulator as a subprocess on a free loopback port; stopped at exit whatever happens."""

    def __init__(self, phase_seconds: float) -> None:
        self.phase_seconds = phase_seconds
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> str:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_openai_batch.emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--api-key",
                EMULATOR_KEY,
                "--phase-seconds",
                str(self.phase_seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        atexit.register(self.stop)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the first line names the URL; "" if the process died
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"the emulator did not start (first line: {line!r})")
        self.base_url = line.rsplit("listening on ", 1)[1].strip()
        return self.base_url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _configure_environment(*, verbose: bool, poll_interval: float, on_emulator: bool) -> None:
    env = os.environ
    env["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}")
    env.setdefault("OPENAI_BATCH_POLL_INTERVAL", str(poll_interval))
    env.setdefault("OPENAI_BATCH_EXAMPLES_DIR", str(OUTPUT_DIR))
    if on_emulator:
        env["OPENAI_BATCH_EXAMPLES_EMULATOR"] = "1"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(name, None)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if not verbose:
        env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _migrate_if_needed() -> None:
    """``airflow db migrate`` once per Airflow version (a marker file remembers it)."""
    from importlib.metadata import version

    marker = AIRFLOW_HOME / ".migrated"
    wanted = f"apache-airflow-core {version('apache-airflow-core')}"
    if marker.exists() and marker.read_text() == wanted and (AIRFLOW_HOME / "airflow.db").exists():
        return
    print(f"Preparing the demo's Airflow database in {AIRFLOW_HOME} (first run only) ...", flush=True)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker.write_text(wanted)
    print(f"  done in {time.monotonic() - started:.1f}s", flush=True)


def _run_dag() -> tuple[str, str, Any]:
    """Run the DAG with ``dag.test()``; return (run id, state, the summarize task's return value)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from example_dags.openai_batch_chat import openai_batch_chat_dag

    if os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL") == "WARNING":
        # Airflow's own deprecation noise (e.g. about .airflowignore pattern syntax) is not the demo's business.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    dag_run = openai_batch_chat_dag.test()
    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=DAG_ID, task_ids="summarize", key="return_value")
        ).first()
        summary = XComModel.deserialize_value(row) if row is not None else None
        states = {
            ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
            for ti in dag_run.get_task_instances(session=session)
        }
    print("Task states:", ", ".join(f"{task}={state}" for task, state in sorted(states.items())))
    state = dag_run.state.value if hasattr(dag_run.state, "value") else str(dag_run.state)
    return dag_run.run_id, state, summary


def _print_summary(summary: Any, show: int = 5) -> None:
    if not isinstance(summary, dict):
        print("The summarize task returned nothing.")
        return
    counts = summary.get("request_counts") or {}
    print(f"Batch:    {summary.get('batch_id')}  status={summary.get('status')}")
    print(f"Requests: {counts.get('total')} total, {counts.get('completed')} completed, {counts.get('failed')} failed")
    print(f"Results:  {summary.get('output_path')}")
    missing = summary.get("missing") or []
    print(f"Matched:  {summary.get('results')} results for the prompts" + (f"; missing {missing}" if missing else ""))
    answers = summary.get("answers") or {}
    for custom_id, text in list(answers.items())[:show]:
        print(f"  {custom_id:<15} -> {text}")
    if len(answers) > show:
        print(f"  ... and {len(answers) - show} more")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_dags.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="show Airflow's INFO logs (task logs included)")
    parser.add_argument("--phase-seconds", type=float, default=0.5, help="emulator phase length (default 0.5)")
    parser.add_argument("--fresh", action="store_true", help="delete .airflow-demo/ first (a new database)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.fresh and AIRFLOW_HOME.exists():
        shutil.rmtree(AIRFLOW_HOME)
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)

    real = os.environ.get("AIRFLOW_CONN_OPENAI_DEFAULT")
    emulator: Emulator | None = None
    try:
        if real:
            print(
                "AIRFLOW_CONN_OPENAI_DEFAULT is set: running against that service, not the emulator.\n"
                "This creates a real, billed batch, which can take up to 24 hours to finish.",
                flush=True,
            )
            _configure_environment(verbose=args.verbose, poll_interval=30.0, on_emulator=False)
        else:
            emulator = Emulator(args.phase_seconds)
            url = emulator.start()
            print(f"Emulator: {url} (phase {args.phase_seconds}s), connection openai_default -> it", flush=True)
            os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
                {"conn_type": "openai_batch", "host": url, "password": EMULATOR_KEY}
            )
            _configure_environment(verbose=args.verbose, poll_interval=0.3, on_emulator=True)
        _migrate_if_needed()
        print(f"Running DAG {DAG_ID} with dag.test() (AIRFLOW_HOME={AIRFLOW_HOME}) ...", flush=True)
        run_id, state, summary = _run_dag()
        print()
        print(f"DAG run {run_id}: {state}")
        _print_summary(summary)
        print(f"Total demo time {time.monotonic() - started:.1f}s")
        return 0 if state == "success" else 1
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
