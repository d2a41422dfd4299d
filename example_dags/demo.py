"""``make demo [DAG=<example>]``: run one example DAG once and say what it did, against what.

Against the local emulator by default: the emulator (a stand-in for the OpenAI Batch API that answers
with made-up but deterministic results, no model, no key, no bill) is started on a free loopback port
and ``openai_default`` points at it. When ``AIRFLOW_CONN_OPENAI_DEFAULT`` is already set, that
connection (a real OpenAI, Azure OpenAI or gateway account) is used instead, and real batches are
billed and can take up to 24 hours.

Airflow runs with a private ``AIRFLOW_HOME`` (``.airflow-demo/`` in the repository, a SQLite database
migrated on the first run) and the DAG is executed in this process with ``dag.test()``, which runs the
deferred tasks' triggers inline. Input and result files are written under ``demo-output/``.

Usage: ``python -m example_dags.demo [DAG] [--verbose] [--phase-seconds S] [--fresh]``
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.emulator.launch import EmulatorProcess, command, launch

REPO = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO / "example_dags"
AIRFLOW_HOME = REPO / ".airflow-demo"
OUTPUT_DIR = REPO / "demo-output"
DEFAULT_DAG = "openai_batch_chat"
EMULATOR_KEY = "sk-emulator"
#: The examples ``make demo`` can run: every ``openai_batch_*.py`` module of ``example_dags/``.
EXAMPLES = tuple(sorted(path.stem for path in DAGS_FOLDER.glob("openai_batch_*.py")))


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


def _state(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def _run_dag(dag_id: str) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    """Run the example with ``dag.test()``.

    :return: the run id, the run's state, every task's state, and the ``return_value`` XCom of each
        task that has no downstream task (what the example ends with).
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    if os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL") == "WARNING":
        # Airflow's own deprecation noise (e.g. about .airflowignore pattern syntax) is not the demo's business.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    module = importlib.import_module(f"example_dags.{dag_id}")
    dag = getattr(module, f"{dag_id}_dag")
    dag_run = dag.test()
    leaves = [task.task_id for task in dag.tasks if not task.downstream_task_ids]
    with create_session() as session:
        states = {ti.task_id: _state(ti.state) for ti in dag_run.get_task_instances(session=session)}
        results: dict[str, Any] = {}
        for task_id in leaves:
            row = session.scalars(
                XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_id, task_ids=task_id, key="return_value")
            ).first()
            results[task_id] = XComModel.deserialize_value(row) if row is not None else None
    return dag_run.run_id, _state(dag_run.state), states, results


def _print_chat_summary(summary: Any, show: int = 5) -> None:
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


def _print_results(dag_id: str, results: dict[str, Any], width: int = 160, rows: int = 12) -> None:
    for task_id, value in results.items():
        print(f"What the last task, {task_id}, returned:")
        if dag_id == DEFAULT_DAG and isinstance(value, dict):
            _print_chat_summary(value)
            continue
        items = list(value.items()) if isinstance(value, dict) else [("", value)]
        for key, item in items[:rows]:
            line = f"  {key}: " if key != "" else "  "
            text = json.dumps(item, default=str)
            print(line + (text if len(line) + len(text) <= width else text[: width - len(line) - 5] + " ..."))
        if len(items) > rows:
            print(f"  ... and {len(items) - rows} more")


def _explain(dag_id: str, *, on_emulator: bool) -> None:
    if on_emulator:
        print(
            "\nThis ran against the local emulator, so any answers above are its stand-in answers, not a\n"
            "model's: a chat or responses answer is 'echo:<12 hex digits of the prompt's sha256> <the prompt's\n"
            "first 64 characters>', an embedding 8 numbers derived from the input's sha256. The provider made the\n"
            "same API calls (upload, create, poll, download, cancel) that it makes to the real service.\n"
            "\nTo run the same DAG against the real OpenAI API (this creates a real, billed batch, which can\n"
            "take up to 24 hours):\n"
            '  export AIRFLOW_CONN_OPENAI_DEFAULT=\'{"conn_type": "openai_batch", "password": "sk-..."}\'\n'
            f"  make demo DAG={dag_id}\n"
            "or put example_dags/ into your Airflow's dags folder and trigger it there (docs/connections.md)."
        )
    else:
        print("\nThese answers came from the service that AIRFLOW_CONN_OPENAI_DEFAULT points at.")


def _unknown(name: str) -> int:
    print(f"Unknown example DAG {name!r}. Choose one of:", file=sys.stderr)
    for dag_id in EXAMPLES:
        print(f"  make demo DAG={dag_id}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_dags.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("dag", nargs="?", default=DEFAULT_DAG, help=f"example to run (default {DEFAULT_DAG})")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's INFO logs (task logs included)")
    parser.add_argument("--phase-seconds", type=float, default=0.5, help="emulator phase length (default 0.5)")
    parser.add_argument("--fresh", action="store_true", help="delete .airflow-demo/ first (a new database)")
    args = parser.parse_args(argv)
    if args.dag not in EXAMPLES:
        return _unknown(args.dag)

    started = time.monotonic()
    if args.fresh and AIRFLOW_HOME.exists():
        shutil.rmtree(AIRFLOW_HOME)
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)

    real = os.environ.get("AIRFLOW_CONN_OPENAI_DEFAULT")
    emulator: EmulatorProcess | None = None
    try:
        if real:
            print(
                "AIRFLOW_CONN_OPENAI_DEFAULT is set: running against that service, not the emulator.\n"
                "This creates a real, billed batch, which can take up to 24 hours to finish.",
                flush=True,
            )
            _configure_environment(verbose=args.verbose, poll_interval=30.0, on_emulator=False)
        else:
            emulator = launch(command(api_key=EMULATOR_KEY, phase_seconds=args.phase_seconds))
            atexit.register(emulator.stop)  # stopped at exit whatever happens
            url = emulator.base_url
            print(
                f"Started the local OpenAI Batch API emulator at {url} (no model, no API key, nothing billed;\n"
                f"each batch status lasts {args.phase_seconds}s). The connection openai_default points at it:\n"
                f"  AIRFLOW_CONN_OPENAI_DEFAULT="
                f'\'{{"conn_type": "openai_batch", "host": "{url}", "password": "{EMULATOR_KEY}"}}\'',
                flush=True,
            )
            os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
                {"conn_type": "openai_batch", "host": url, "password": EMULATOR_KEY}
            )
            _configure_environment(verbose=args.verbose, poll_interval=0.3, on_emulator=True)
        _migrate_if_needed()
        from importlib.metadata import version

        print(
            f"Running example_dags/{args.dag}.py once with dag.test() in this process "
            f"(Airflow {version('apache-airflow-core')}, AIRFLOW_HOME={AIRFLOW_HOME}, "
            f"polling every {os.environ['OPENAI_BATCH_POLL_INTERVAL']}s) ...",
            flush=True,
        )
        run_id, state, states, results = _run_dag(args.dag)
        print("Task states:", ", ".join(f"{task}={task_state}" for task, task_state in sorted(states.items())))
        print(f"\nDAG run {run_id}: {state}")
        _print_results(args.dag, results)
        _explain(args.dag, on_emulator=emulator is not None)
        print(f"Files: {os.environ['OPENAI_BATCH_EXAMPLES_DIR']}/{args.dag}/")
        print(f"Total demo time {time.monotonic() - started:.1f}s")
        return 0 if state == "success" else 1
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
