"""``python -m benchmarks.run``: the benchmark suite, ours and the official provider side by side.

Prints one markdown table (metric | ours | official | ratio | target | met?) and a line per target, and
writes both to ``benchmarks/RESULTS.md`` with the machine and how to reproduce. Each figure is the median
of several runs; every measured run happens in a fresh worker process, and every server in a process of
its own. Exit status 0 even when a target is missed (the table says so); non-zero only when the benchmark
itself broke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    IMPLS,
    OFFICIAL,
    OURS,
    ROOT,
    Server,
    connection_env,
    median,
    run_worker,
    worker_env,
)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PERFORMANCE_PAGE = ROOT / "docs" / "performance.md"
#: The part of docs/performance.md that ``make bench`` rewrites with the latest table.
BENCH_START = "<!-- bench:start (written by make bench) -->"
BENCH_END = "<!-- bench:end -->"

#: name -> (ours, official); a comma-separated list is imported in order, timed after each module.
IMPORT_MODULES = {
    "operators": ("airflow_provider_openai_batch.operators.batch", "airflow.providers.openai.operators.openai"),
    "sensor": ("airflow_provider_openai_batch.sensors.batch", None),
    # Our trigger imports its hook (and httpx) lazily, in its first run(): the second checkpoint.
    "trigger": (
        "airflow_provider_openai_batch.triggers.batch,airflow_provider_openai_batch.hooks.openai_batch,httpx",
        "airflow.providers.openai.triggers.openai",
    ),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the table --------------------------------------------------------------------------------------


@dataclass
class Value:
    """A median figure; ``bound`` is ``">"`` when the run was cut short and the figure is a lower bound."""

    number: float | None
    fmt: str = "{:.1f}"
    bound: str = ""
    note: str = ""

    def __str__(self) -> str:
        if self.number is None:
            return self.note or "n/a"
        text = self.bound + self.fmt.format(self.number)
        return f"{text} ({self.note})" if self.note else text


@dataclass
class Row:
    metric: str
    ours: Value
    official: Value
    target: str = ""
    met: bool | None = None
    target_key: str = ""

    def ratio(self) -> str:
        a, b = self.ours.number, self.official.number
        if a is None or b is None or b == 0:
            return "n/a"
        value = a / b
        if value >= 0.1:
            text = f"{value:.2f}x"
        elif value >= 0.001:
            text = f"{value:.3f}x"
        else:
            text = f"{value:.0e}x"
        if self.official.bound == ">" and not self.ours.bound:
            return "< " + text  # official figure is a lower bound
        if self.ours.bound == ">" and not self.official.bound:
            return "> " + text
        return text

    def cells(self) -> list[str]:
        met = "" if self.met is None else ("yes" if self.met else "**NO**")
        return [self.metric, str(self.ours), str(self.official), self.ratio(), self.target, met]


def render_table(rows: Sequence[Row]) -> str:
    header = ["metric", "ours", "official", "ratio (ours/official)", "target (ours)", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


# -- 1 and 2: the trigger loop --------------------------------------------------------------------


def _window_rate(poll_times: list[float], start: float, end: float) -> float:
    if not poll_times or end <= start:
        return 0.0
    first = min(poll_times)
    return sum(1 for t in poll_times if first + start <= t < first + end) / (end - start)


#: Intervals from a paced run's first poll to its batches' completion (keeps ``make bench`` short).
PACED_INTERVALS = 1.5

#: Poll interval of the connection-reuse run: just over httpx's default keep-alive expiry of 5 s.
KEEPALIVE_INTERVAL = 6
#: Polls per trigger in that run.
KEEPALIVE_POLLS = 6
#: Triggers, poll interval and settling time of the memory run (no server latency: every trigger is past its
#: first poll when measured, the official ones too).
MEMORY_N, MEMORY_INTERVAL, MEMORY_SETTLE = 1000, 5.0, 8.0
#: The official trigger builds an OpenAI SDK client per poll and polls inside the loop: with tracemalloc on,
#: 1,000 of them do not all get through their first poll in minutes. 100, polling once (interval of an hour).
MEMORY_N_OFFICIAL, MEMORY_INTERVAL_OFFICIAL, MEMORY_SETTLE_OFFICIAL = 100, 3600.0, 30.0


def loop_configs(args: argparse.Namespace) -> list[tuple[int, float]]:
    """(N, poll interval): every N at the stress interval, and the big N at a realistic interval."""
    configs = [(n, args.poll_interval) for n in args.n]
    if args.big_n:
        configs.append((args.big_n, args.big_interval))
    return configs


def paced_config(args: argparse.Namespace, interval: float) -> bool:
    """Whether a loop configuration is the realistic one (its own interval; one run per provider)."""
    return interval != args.poll_interval


def loop_label(n: int, interval: float) -> str:
    return f"1. loop N={n:,} every {interval:g} s"


def _freshness(event_at: dict[str, float], done_at: dict[str, float]) -> float | None:
    """Worst time from a batch turning completed (server clock) to its trigger's event (same machine clock)."""
    lags = [event_at[b] - done_at[b] for b in event_at if b in done_at]
    return max(lags) if lags else None


def bench_loop(args: argparse.Namespace, workdir: Path) -> dict[tuple[str, Any], dict[str, Any]]:
    """N triggers per provider in one loop against the loopback server; medians per (impl, N, interval)."""
    out: dict[tuple[str, Any], dict[str, Any]] = {}
    with Server(["-m", "benchmarks.loopback", "--port", "0"], banner="loopback listening") as server:
        env = worker_env(connection_env(server.base_url))
        for n, interval in loop_configs(args):
            paced = interval != args.poll_interval
            # A paced run: the first round one interval in, completion one interval after the batches are first
            # reported, the event at most one round later.
            complete_after = interval if paced else args.complete_after
            deadline = 3.5 * interval if paced else args.deadline
            for impl in IMPLS:
                runs = []
                # The official trigger never finishes a run (it is cut off at the deadline): one run tells.
                reps = args.loop_runs if impl == OURS and not paced else 1
                for rep in range(reps):
                    server.control(
                        f"/_bench/reset?latency={args.latency}&complete_after={complete_after}&population={n}"
                    )
                    result = run_worker(
                        "benchmarks.loop_worker",
                        ["--impl", impl, "--n", str(n), "--poll-interval", str(interval), "--deadline", str(deadline)],
                        env=env,
                        timeout=deadline + 300,
                        workdir=workdir,
                    )
                    stats = server.control("/_bench/stats")
                    result["polls"] = stats["polls"]
                    result["connections"] = stats["connections"]
                    # Steady state: from one interval after the first request until the batches turn completed.
                    window = (0.0, interval) if paced else (interval, complete_after)
                    result["rate"] = _window_rate(stats["poll_times"], *window)
                    fresh = _freshness(result.pop("event_at"), stats["done_at"])
                    result["fresh"] = None if fresh is None or result["timed_out"] else fresh / interval
                    runs.append(result)
                    log(
                        f"loop {impl:8s} N={n:5d} every {interval:g}s run {rep + 1}/{reps}: "
                        f"done {result['completed']}/{n}{' (cut short)' if result['timed_out'] else ''} "
                        f"in {result['wall']:.1f}s, lag max {1000 * result['lag_max']:.0f} ms "
                        f"p99 {1000 * result['lag_p99']:.0f} ms, {result['rate'] * interval:.0f} requests/interval, "
                        f"{result['polls']} requests, {result['connections']} connections, "
                        f"cpu {result['cpu']:.1f}s, loop-thread CPU max {1000 * result['cpu_lag_max']:.1f} ms, "
                        f"full collections {[round(c[2]) for c in result.get('collections', []) if c[0] == 2]} ms, "
                        f"load {os.getloadavg()[0]:.1f}"
                    )
                collected: dict[str, Any] = {}
                if not paced:
                    # One more run with the start-up heap collected first: what is left is the triggers' own.
                    server.control(
                        f"/_bench/reset?latency={args.latency}&complete_after={complete_after}&population={n}"
                    )
                    collected = run_worker(
                        "benchmarks.loop_worker",
                        ["--impl", impl, "--n", str(n), "--poll-interval", str(interval), "--deadline", str(deadline),
                         "--collect-first"],
                        env=env,
                        timeout=deadline + 300,
                        workdir=workdir,
                    )  # fmt: skip
                    log(
                        f"loop {impl:8s} N={n:5d} every {interval:g}s, start-up heap collected first: lag max "
                        f"{1000 * collected['lag_max']:.0f} ms, loop-thread CPU max "
                        f"{1000 * collected['cpu_lag_max']:.1f} ms, load {os.getloadavg()[0]:.1f}"
                    )
                full = [[c for c in r.get("collections", []) if c[0] == 2] for r in runs]
                out[(impl, n, interval)] = {
                    "full_gcs": median([len(f) for f in full]),
                    "full_gc_max_ms": median([max((c[2] for c in f), default=0.0) for f in full]),
                    "lag_collected_ms": 1000 * collected["lag_max"] if collected else None,
                    "cpu_lag_collected_ms": 1000 * collected["cpu_lag_max"] if collected else None,
                    "collected_timed_out": bool(collected.get("timed_out")),
                    "load": os.getloadavg()[0],
                    "lag_max_ms": median([1000 * r["lag_max"] for r in runs]),
                    "lag_p99_ms": median([1000 * r["lag_p99"] for r in runs]),
                    "cpu_lag_ms": median([1000 * r.get("cpu_lag_max", float("nan")) for r in runs]),
                    "per_interval": median([r["rate"] * interval for r in runs]),
                    "wall": median([r["wall"] for r in runs]),
                    "timed_out": any(r["timed_out"] for r in runs),
                    "completed": median([r["completed"] for r in runs]),
                    # Loop CPU per waiting batch per interval: process CPU over the run / (N x intervals run).
                    "cpu_per_batch_ms": median(
                        [1000 * r["cpu"] / (n * max(r["wall"], interval) / interval) for r in runs]
                    ),
                    "connections": median([r["connections"] for r in runs]),
                    "fresh": median([r["fresh"] for r in runs]),
                }

        # Memory: N triggers waiting, past their first poll.
        for impl in IMPLS:
            n, interval, settle = (
                (MEMORY_N, MEMORY_INTERVAL, MEMORY_SETTLE)
                if impl == OURS
                else (MEMORY_N_OFFICIAL, MEMORY_INTERVAL_OFFICIAL, MEMORY_SETTLE_OFFICIAL)
            )
            server.control(f"/_bench/reset?latency=0&complete_after=3600&population={n}")
            result = run_worker(
                "benchmarks.loop_worker",
                ["--impl", impl, "--n", str(n), "--poll-interval", str(interval),
                 "--deadline", "600", "--memory", str(settle)],
                env=env,
                timeout=900,
                workdir=workdir,
            )  # fmt: skip
            out[(impl, "memory")] = result
            log(f"memory {impl}: {result}")

        # 2: one trigger polling back to back: CPU per poll and TCP connections per 100 polls.
        for impl in IMPLS:
            runs = []
            for _ in range(args.runs):
                server.control(f"/_bench/reset?latency=0&complete_after_polls={args.single_polls}")
                result = run_worker(
                    "benchmarks.loop_worker",
                    [
                        "--impl",
                        impl,
                        "--n",
                        "1",
                        "--poll-interval",
                        "0.005",
                        "--deadline",
                        "120",
                        "--no-ticker",
                        "--warmup",
                    ],
                    env=env,
                    timeout=240,
                    workdir=workdir,
                )
                stats = server.control("/_bench/stats")
                runs.append(
                    {
                        "cpu_per_poll_ms": 1000 * result["cpu"] / max(stats["polls"], 1),
                        "conn_per_100": 100 * stats["connections"] / max(stats["polls"], 1),
                        "polls": stats["polls"],
                    }
                )
            out[(impl, 1)] = {key: median([r[key] for r in runs]) for key in runs[0]}
            log(f"single trigger {impl}: {out[(impl, 1)]}")

        # 2b: the same at a realistic pace: a few triggers polling every KEEPALIVE_INTERVAL seconds, longer
        # than httpx's default 5 s keep-alive expiry (the default poll interval of both triggers is 60 s).
        # Each trigger opens one connection to start with; what counts is every connection after that.
        paced_n = 3
        for impl in IMPLS:
            server.control(f"/_bench/reset?latency=0&complete_after={KEEPALIVE_POLLS * KEEPALIVE_INTERVAL + 1}")
            run_worker(
                "benchmarks.loop_worker",
                ["--impl", impl, "--n", str(paced_n), "--poll-interval", str(KEEPALIVE_INTERVAL),
                 "--deadline", str(KEEPALIVE_POLLS * KEEPALIVE_INTERVAL + 60)],
                env=env,
                timeout=KEEPALIVE_POLLS * KEEPALIVE_INTERVAL + 180,
                workdir=workdir,
            )  # fmt: skip
            stats = server.control("/_bench/stats")
            reconnects = max(stats["connections"] - paced_n, 0)
            out[(impl, "paced")] = {"reconnect_per_100": 100 * reconnects / max(stats["polls"], 1)}
            log(f"paced triggers {impl}: {stats['polls']} polls, {stats['connections']} connections")
    return out


def loop_rows(args: argparse.Namespace, res: dict[tuple[str, Any], dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for n, interval in loop_configs(args):
        label = loop_label(n, interval)
        values: dict[str, dict[str, Value]] = {}
        for impl in IMPLS:
            r = res[(impl, n, interval)]
            cut = ">" if r["timed_out"] else ""
            done = f"{r['completed']:.0f}/{n} done at cut-off" if r["timed_out"] else ""
            values[impl] = {
                "lag_max": Value(r["lag_max_ms"], "{:,.0f} ms", cut),
                "lag_p99": Value(r["lag_p99_ms"], "{:,.0f} ms", cut),
                "cpu_lag": Value(r["cpu_lag_ms"], "{:,.1f} ms", cut),
                "full_gcs": Value(r["full_gcs"], "{:.0f}", note=""),
                "full_gc_max": Value(r["full_gc_max_ms"], "{:,.0f} ms"),
                "lag_collected": Value(r["lag_collected_ms"], "{:,.0f} ms", ">" if r["collected_timed_out"] else ""),
                "cpu_lag_collected": Value(
                    r["cpu_lag_collected_ms"], "{:,.1f} ms", ">" if r["collected_timed_out"] else ""
                ),
                "load": Value(r["load"], "{:.1f}"),
                "requests": Value(r["per_interval"], "{:,.1f}"),
                "cpu": Value(r["cpu_per_batch_ms"], "{:.3f} ms"),
                "connections": Value(r["connections"], "{:,.0f}"),
                "fresh": Value(r["fresh"], "{:.2f} intervals", note="" if r["fresh"] is not None else "not fired"),
                "wall": Value(r["wall"], "{:.1f} s", cut, note=done),
            }
        ours = res[(OURS, n, interval)]
        big = n == max(args.n)

        def side(title: str, key: str, label: str = label, values: dict[str, dict[str, Value]] = values) -> Row:
            return Row(f"{label}: {title}", values[OURS][key], values[OFFICIAL][key])

        rows += [
            Row(
                f"{label}: max loop lag",
                values[OURS]["lag_max"],
                values[OFFICIAL]["lag_max"],
                "≤ 20 ms",
                ours["lag_max_ms"] <= 20 and not ours["timed_out"],
                f"lag{n}@{interval:g}",
            ),
            side("p99 loop lag", "lag_p99"),
            side("longest loop-thread CPU between two ticks (machine load excluded)", "cpu_lag"),
            side("full garbage collections during the run", "full_gcs"),
            side("longest full garbage collection", "full_gc_max"),
            side("load average (1 min) when measured", "load"),
            *(
                []
                if paced_config(args, interval)
                else [
                    side("max loop lag, start-up heap collected first", "lag_collected"),
                    side("longest loop-thread CPU, start-up heap collected first", "cpu_lag_collected"),
                ]
            ),
            Row(
                f"{label}: HTTP requests per poll interval",
                values[OURS]["requests"],
                values[OFFICIAL]["requests"],
                "≤ 15" if big else "",
                ours["per_interval"] <= 15 if big else None,
                f"requests{n}",
            ),
            Row(
                f"{label}: loop CPU per waiting batch per interval",
                values[OURS]["cpu"],
                values[OFFICIAL]["cpu"],
                "≤ 0.1 ms" if big else "",
                ours["cpu_per_batch_ms"] <= 0.1 if big else None,
                f"cpu{n}",
            ),
            Row(
                f"{label}: TCP connections opened",
                values[OURS]["connections"],
                values[OFFICIAL]["connections"],
                "≤ 10" if big else "",
                ours["connections"] <= 10 if big else None,
                f"tcp{n}",
            ),
            Row(
                f"{label}: freshness (batch completed -> its event), worst",
                values[OURS]["fresh"],
                values[OFFICIAL]["fresh"],
                "≤ 1 interval",
                ours["fresh"] is not None and ours["fresh"] <= 1.0,
                f"fresh{n}@{interval:g}",
            ),
            Row(f"{label}: wall time until all fired", values[OURS]["wall"], values[OFFICIAL]["wall"]),
        ]
    memory = {impl: res[(impl, "memory")] for impl in IMPLS}
    rows += [
        Row(
            f"1. memory per waiting trigger (N={MEMORY_N:,}; official N={MEMORY_N_OFFICIAL}; traced allocations)",
            Value(memory[OURS]["bytes_per_trigger"] / 1024, "{:.1f} KB"),
            Value(memory[OFFICIAL]["bytes_per_trigger"] / 1024, "{:.1f} KB"),
            "≤ 8 KB",
            memory[OURS]["bytes_per_trigger"] <= 8 * 1024,
            "memory",
        ),
        Row(
            f"1. objects per waiting trigger (N={MEMORY_N:,}; official N={MEMORY_N_OFFICIAL}; tracked by the gc)",
            Value(memory[OURS]["objects_per_trigger"], "{:.0f}"),
            Value(memory[OFFICIAL]["objects_per_trigger"], "{:.0f}"),
        ),
    ]
    single = {impl: res[(impl, 1)] for impl in IMPLS}
    paced = {impl: res[(impl, "paced")] for impl in IMPLS}
    rows += [
        Row(
            "2. CPU per poll (1 trigger, back to back)",
            Value(single[OURS]["cpu_per_poll_ms"], "{:.2f} ms"),
            Value(single[OFFICIAL]["cpu_per_poll_ms"], "{:.2f} ms"),
        ),
        Row(
            "2. new TCP connections per 100 polls (1 trigger)",
            Value(single[OURS]["conn_per_100"], "{:.2f}"),
            Value(single[OFFICIAL]["conn_per_100"], "{:.2f}"),
            "≤ 1",
            single[OURS]["conn_per_100"] <= 1,
            "conn",
        ),
        Row(
            f"2. reconnections per 100 polls ({KEEPALIVE_INTERVAL} s poll interval, after each trigger's first)",
            Value(paced[OURS]["reconnect_per_100"], "{:.0f}"),
            Value(paced[OFFICIAL]["reconnect_per_100"], "{:.0f}"),
            "≤ 1",
            paced[OURS]["reconnect_per_100"] <= 1,
            "keepalive",
        ),
    ]
    return rows


# -- 3: files --------------------------------------------------------------------------------------


def bench_files(args: argparse.Namespace, workdir: Path, input_path: Path) -> list[Row]:
    data_dir = workdir / "emulator-data"
    data_dir.mkdir()
    mb = input_path.stat().st_size / 1e6
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with Server(
        ["-m", "airflow_provider_openai_batch.emulator", "--host", "127.0.0.1", "--port", "0",
         "--api-key", "sk-bench", "--data-dir", str(data_dir)],
        banner="emulator listening",
    ) as server:  # fmt: skip
        env = worker_env(connection_env(server.base_url))
        file_id = None
        for op in ("upload", "download"):
            for impl in IMPLS:
                runs = []
                for rep in range(args.runs + 1):
                    traced = rep == args.runs  # one extra run with tracemalloc (slower, not timed)
                    extra = ["--file-id", str(file_id)] if op == "download" else []
                    result = run_worker(
                        "benchmarks.files_worker",
                        ["--impl", impl, "--op", op, "--path", str(input_path if op == "upload" else workdir),
                         *extra, *(["--tracemalloc"] if traced else [])],
                        env=env,
                        timeout=600,
                        workdir=workdir,
                    )  # fmt: skip
                    if op == "upload" and file_id is None:
                        file_id = result["result"]
                    expected = input_path.stat().st_size
                    if result["bytes"] != expected:
                        raise RuntimeError(f"{impl} {op} moved {result['bytes']} bytes, not {expected}")
                    runs.append(result)
                    log(
                        f"{op:8s} {impl:8s} run {rep + 1}: {result['wall']:.2f}s, peak extra RSS "
                        f"{result['peak_extra_mb']:.1f} MB"
                        + (f", tracemalloc peak {result['tracemalloc_peak_mb']:.1f} MB" if traced else "")
                    )
                timed = runs[:-1]
                results[(op, impl)] = {
                    "peak": median([r["peak_extra_mb"] for r in timed]),
                    "wall": median([r["wall"] for r in timed]),
                    "traced": runs[-1]["tracemalloc_peak_mb"],
                }
    shutil.rmtree(data_dir, ignore_errors=True)
    rows = []
    for op in ("upload", "download"):
        ours, official = results[(op, OURS)], results[(op, OFFICIAL)]
        rows += [
            Row(
                f"3. {op} {mb:.0f} MB: peak extra RSS",
                Value(ours["peak"], "{:.1f} MB"),
                Value(official["peak"], "{:.1f} MB"),
                "≤ 50 MB",
                ours["peak"] <= 50,
                op,
            ),
            Row(
                f"3. {op} {mb:.0f} MB: peak Python allocations (tracemalloc)",
                Value(ours["traced"], "{:.1f} MB"),
                Value(official["traced"], "{:.1f} MB"),
            ),
            Row(
                f"3. {op} {mb:.0f} MB: wall time", Value(ours["wall"], "{:.2f} s"), Value(official["wall"], "{:.2f} s")
            ),
        ]
    return rows


# -- 4: import cost --------------------------------------------------------------------------------

_IMPORT_PROBE = """
import importlib, json, sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
marks = []
for name in sys.argv[1].split(","):
    importlib.import_module(name)
    marks.append(time.perf_counter() - t1)
print(json.dumps({"sdk": t1 - t0, "extra": marks}))
"""


def _import_once(module: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, module],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"importing {module} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def bench_imports(args: argparse.Namespace) -> list[Row]:
    env = worker_env()
    rows = []
    sdk: list[float] = []
    for name, (ours_module, official_module) in IMPORT_MODULES.items():
        ours: list[list[float]] = []
        official: list[float] = []
        for _ in range(args.import_runs):  # interleaved, so that drift hits both alike
            result = _import_once(ours_module, env)
            ours.append([1000 * mark for mark in result["extra"]])
            sdk.append(1000 * result["sdk"])
            if official_module:
                result = _import_once(official_module, env)
                official.append(1000 * result["extra"][-1])
        first = median([marks[0] for marks in ours])
        theirs = median(official) if official else None
        log(f"import {name}: ours {first:.0f} ms, official {'n/a' if theirs is None else f'{theirs:.0f} ms'}")
        rows.append(
            Row(
                f"4. import cost after `import airflow.sdk`: {name} module",
                Value(first, "{:.0f} ms"),
                Value(theirs, "{:.0f} ms", note="" if official_module else "n/a: no sensor"),
                "≤ 1/5 of official" if official_module else "",
                None if theirs is None else first is not None and first <= theirs / 5,
                f"import_{name}",
            )
        )
        if "," in ours_module:
            total = median([marks[-1] for marks in ours])
            rows.append(
                Row(
                    f"4. import cost: {name} module + what its first run() imports (hook, httpx)",
                    Value(total, "{:.0f} ms"),
                    Value(theirs, "{:.0f} ms"),
                )
            )
    rows.append(
        Row("4. (for reference) `import airflow.sdk` itself", Value(median(sdk), "{:.0f} ms"), Value(None, note="same"))
    )
    return rows


# -- 5: validation and results parsing ------------------------------------------------------------


def bench_throughput(args: argparse.Namespace, workdir: Path, input_path: Path, output_path: Path) -> list[Row]:
    env = worker_env()
    runs = []
    for rep in range(args.runs):
        result = run_worker(
            "benchmarks.throughput_worker",
            ["--input", str(input_path), "--output", str(output_path)],
            env=env,
            timeout=600,
            workdir=workdir,
        )
        runs.append(result)
        log(
            f"throughput run {rep + 1}: validate {result['validate_mb_s']:.0f} MB/s, "
            f"parse {result['parse_mb_s']:.0f} MB/s ({result['parse_results_s']:,.0f} results/s)"
        )
    in_mb = input_path.stat().st_size / 1e6
    out_mb = output_path.stat().st_size / 1e6
    none = Value(None, note="n/a: no validator")
    return [
        Row(
            f"5. validate {in_mb:.0f} MB batch input ({runs[0]['validate_requests']:,} requests)",
            Value(median([r["validate_mb_s"] for r in runs]), "{:.0f} MB/s"),
            none,
        ),
        Row(
            f"5. parse {out_mb:.0f} MB batch output ({runs[0]['parse_results']:,} results)",
            Value(median([r["parse_mb_s"] for r in runs]), "{:.0f} MB/s"),
            Value(None, note="n/a: no results reader"),
        ),
        Row(
            "5. parse batch output: results per second",
            Value(median([r["parse_results_s"] for r in runs]), "{:,.0f}/s"),
            Value(None, note="n/a"),
        ),
    ]


# -- 6: a job larger than one batch ----------------------------------------------------------------


def bench_job(args: argparse.Namespace, workdir: Path) -> list[Row]:
    from benchmarks.data import write_job_input

    input_path = workdir / "job_input.jsonl"
    log(f"writing a {args.job_lines:,}-line job input")
    size = write_job_input(input_path, args.job_lines)
    data_dir = workdir / "job-emulator-data"
    data_dir.mkdir()
    runs = []
    with Server(
        ["-m", "airflow_provider_openai_batch.emulator", "--host", "127.0.0.1", "--port", "0",
         "--api-key", "sk-bench", "--data-dir", str(data_dir), "--phase-seconds", "0.2"],
        banner="emulator listening",
    ) as server:  # fmt: skip
        env = worker_env(connection_env(server.base_url))
        for rep in range(args.job_runs):
            result = run_worker(
                "benchmarks.job_worker",
                ["--input", str(input_path), "--workdir", str(workdir / f"job-{rep}")],
                env=env,
                timeout=1800,
                workdir=workdir,
            )
            shutil.rmtree(workdir / f"job-{rep}", ignore_errors=True)
            runs.append(result)
            log(
                f"job run {rep + 1}: split {result['split_mb_s']:.0f} MB/s "
                f"({result['split_cpu_mb_s']:.0f} per CPU s, peak +{result['split_peak_extra_mb']:.1f} MB), "
                f"merge {result['merge_mb_s']:.0f} MB/s "
                f"({result['merge_cpu_mb_s']:.0f} per CPU s, peak +{result['merge_peak_extra_mb']:.1f} MB), "
                f"{len(result['shards'])} batches, in order: {result['in_order']}, whole job {result['job_s']:.0f}s"
            )
    shutil.rmtree(data_dir, ignore_errors=True)
    first = runs[0]
    shards = first["shards"]
    most_lines = max(s["requests"] for s in shards)
    most_bytes = max(s["bytes"] for s in shards)
    batches_ok = len(shards) == 3 and most_lines <= 50_000 and most_bytes <= 200 * 1024 * 1024
    peak = max(max(r["split_peak_extra_mb"], r["merge_peak_extra_mb"]) for r in runs)
    split_rate = median([r["split_mb_s"] for r in runs])
    merge_rate = median([r["merge_mb_s"] for r in runs])
    split_cpu = median([r["split_cpu_mb_s"] for r in runs]) or 0.0
    merge_cpu = median([r["merge_cpu_mb_s"] for r in runs]) or 0.0
    clear = first["clear"]
    label = f"6. job {first['input_lines']:,} lines / {size / 1e6:.0f} MB"
    na = Value(None, note="n/a: no job operator")
    return [
        Row(
            f"{label}: batches on OpenAI limits",
            Value(None, note=f"{len(shards)} (largest {most_lines:,} lines, {most_bytes / 1e6:.0f} MB)"),
            na,
            "3, each ≤ 50,000 lines and ≤ 200 MB",
            batches_ok,
            "job_batches",
        ),
        Row(
            f"{label}: merged custom_id order vs input, line by line",
            Value(None, note=f"{'identical' if first['in_order'] else 'DIFFERENT'}, {first['compared_lines']:,} lines"),
            na,
            "identical",
            all(r["in_order"] for r in runs),
        ),
        Row(
            "6. job: clear after 2 of 3 shard batches exist",
            Value(None, note=f"{clear['new_batches']} new batch, {clear['duplicates']} duplicates"),
            na,
            "1 new, 0 duplicates",
            clear["new_batches"] == 1 and clear["duplicates"] == 0 and clear["batches_after_first_try"] == 2,
        ),
        Row(f"{label}: peak extra RSS, split and merge", Value(peak, "{:.1f} MB"), na, "≤ 32 MB", peak <= 32),
        Row(
            f"{label}: split (check every line, write shards)",
            Value(split_rate, "{:.0f} MB/s", note=f"per CPU second: {split_cpu:.0f} MB/s"),
            na,
            "≥ 100 MB/s",
            split_rate is not None and split_rate >= 100,
            "job_rate",
        ),
        Row(
            f"{label}: merge (input order, from the shards' result files)",
            Value(merge_rate, "{:.0f} MB/s", note=f"per CPU second: {merge_cpu:.0f} MB/s"),
            na,
            "≥ 100 MB/s",
            merge_rate is not None and merge_rate >= 100,
            "job_rate",
        ),
        Row(f"{label}: whole job against the emulator", Value(median([r["job_s"] for r in runs]), "{:.0f} s"), na),
        *bench_job_loop(args, workdir),
    ]


def bench_job_loop(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """The triggerer's loop lag while 50 jobs of 10 shard batches wait (one job trigger each)."""
    jobs, shards, interval = args.job_loop
    jobs, shards = int(jobs), int(shards)
    complete_after = PACED_INTERVALS * interval
    # A shard completes PACED_INTERVALS intervals after its first poll; its job fires at its next round.
    deadline = (PACED_INTERVALS + 2.5) * interval
    runs = []
    with Server(["-m", "benchmarks.loopback", "--port", "0"], banner="loopback listening") as server:
        env = worker_env(connection_env(server.base_url))
        for rep in range(args.loop_runs):
            # The shard batches are the loopback's listed population: the shared poller may read them in pages.
            server.control(
                f"/_bench/reset?latency={args.latency}&complete_after={complete_after}&population={jobs * shards}"
            )
            result = run_worker(
                "benchmarks.loop_worker",
                ["--impl", OURS, "--n", str(jobs), "--shards", str(shards), "--poll-interval", str(interval),
                 "--deadline", str(deadline)],
                env=env,
                timeout=deadline + 120,
                workdir=workdir,
            )  # fmt: skip
            stats = server.control("/_bench/stats")
            result["polls"], result["lists"] = stats["polls"], stats["lists"]
            runs.append(result)
            log(
                f"job loop {jobs} jobs x {shards} shards every {interval:g}s run {rep + 1}: done "
                f"{result['completed']}/{jobs} in {result['wall']:.1f}s, lag max {1000 * result['lag_max']:.0f} ms "
                f"p99 {1000 * result['lag_p99']:.0f} ms, {result['polls']} requests ({result['lists']} list pages)"
            )
    lag_max = median([1000 * r["lag_max"] for r in runs])
    cut = any(r["timed_out"] for r in runs)
    label = (
        f"6. {jobs} jobs x {shards} shard batches waiting, {interval:g} s interval, "
        f"{args.latency * 1000:.0f} ms per request"
    )
    na = Value(None, note="n/a: no job trigger")
    return [
        Row(
            f"{label}: max loop lag",
            Value(lag_max, "{:,.0f} ms", ">" if cut else ""),
            na,
            "≤ 20 ms",
            lag_max is not None and lag_max <= 20 and not cut,
            "lag-paced",
        ),
        Row(f"{label}: p99 loop lag", Value(median([1000 * r["lag_p99"] for r in runs]), "{:,.0f} ms"), na),
    ]


# -- machine and report ----------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({cpu})",
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "airflow": _version("apache-airflow"),
        "ours": f"airflow-provider-openai-batch {_version('airflow-provider-openai-batch')}",
        "official": f"apache-airflow-providers-openai {_version('apache-airflow-providers-openai')} "
        f"(openai {_version('openai')})",
        "httpx": _version("httpx"),
        "load average at start (1/5/15 min)": "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg()),
    }


#: What limits a missed target and what would fix it, by the prefix of the row's target key (from profiling
#: this suite's runs; see RESULTS.md).
NOTES = {
    "lag": (
        "Measured causes (rows 'full garbage collections', 'longest full garbage collection', 'loop-thread CPU' "
        "and 'start-up heap collected first'): (1) one full garbage collection of the fresh process's start-up "
        "heap (Airflow's modules, then the one-off httpx and hook imports): CPython walks the whole heap each time "
        "it has grown by a quarter since the last full collection, and a fresh process is near that mark; it is "
        "the run's longest loop-thread CPU, and with the start-up heap collected before the triggers start the "
        "worst loop-thread CPU of the same run falls to about a tenth. Any fresh triggerer pays it once, whatever "
        "its triggers. (2) At 10,000 triggers, their own objects (about 23 each, more than the start-up heap) make "
        "the heap pass that mark while they join, and the per-round objects (one future and one wake-up per "
        "trigger) once more every few rounds: each full collection walks the whole heap. (3) The machine's load: "
        "the wall-clock lag includes the time the process waited for a core (see the load rows). The rest is "
        "light: one page parsed per loop iteration, triggers woken 25 per iteration. Next step: fewer gc-tracked "
        "objects per waiting trigger (the wait decision, its policy and error budget as one slotted object); "
        "freezing the start-up heap (`gc.freeze()`, as Airflow's dag processor does before it forks) is the "
        "triggerer's call, not a provider's."
    ),
    "requests": (
        "The waited-on batches are spread over more list pages than expected, or the list left some out "
        "(those are asked for one by one)."
    ),
    "fresh": (
        "A batch's event comes at most one interval after it completes when each round reads the batch's page no "
        "later into the round than the round before: each round starts early by the previous round's length (at "
        "most a quarter interval). A miss means a round ran slower than the one before it (a loaded machine or "
        "server), or a round that needed longer than a quarter interval."
    ),
    "keepalive": (
        "The server closed idle connections before the next poll (the hook keeps them open for "
        "poll_interval x 1.1 + 30 s through httpx's keepalive_expiry; httpx reconnects by itself when the "
        "server closed first). Fix: shorter poll intervals, or a server idle timeout above the interval."
    ),
    "job_rate": (
        "Split and merge are CPU-bound Python loops; the wall figure also holds the time the worker waited for "
        "a core on this shared 2-core machine (see the load average), the per-CPU-second figure does not. "
        "The split's cost per line is the validator's: one JSON parse of every line (`LineChecker`), the "
        "input's SHA-256, the cost estimate added up in the same pass, and the write to the shard file. The "
        "merge reads every input line's `custom_id` from the line's start (no parse), hashes the input again "
        "to prove it unchanged, and copies each result line by offset. Per CPU second both pass 100 MB/s here; "
        "on a loaded machine the wall figure is what the scheduler leaves."
    ),
    "import": (
        "Import figures vary with the machine's load (other processes share its 2 cores); the operators "
        "module imports the hook at the top through `waiting.py` (urllib3 and the models, ~20 ms). Fix if "
        "missed: import `OpenAIBatchHook` lazily in `waiting.py` (it is only needed in `execute`)."
    ),
}


def note_for(target_key: str) -> str | None:
    return next((text for prefix, text in NOTES.items() if target_key.startswith(prefix)), None)


def report(rows: Sequence[Row], args: argparse.Namespace, info: dict[str, str], elapsed: float) -> str:
    table = render_table(rows)
    targets = [row for row in rows if row.met is not None]
    target_lines = [
        f"- {'MET   ' if row.met else 'MISSED'} {row.metric}: ours {row.ours}, target {row.target}" for row in targets
    ]
    missed = [row for row in targets if not row.met]
    notes = []
    seen = set()
    for row in missed:
        note = note_for(row.target_key)
        key = note or row.target_key
        if note and key not in seen:
            seen.add(key)
            notes.append(f"- **{row.metric}**: {note}")
    params = (
        f"latency {args.latency * 1000:.0f} ms per `GET /v1/batches/{{id}}` and `GET /v1/batches`, poll interval "
        f"{args.poll_interval:g} s (and {args.big_interval:g} s for N={args.big_n:,}), batches complete "
        f"{args.complete_after:g} s after they are first reported ({PACED_INTERVALS:g} intervals at "
        f"{args.big_interval:g} s), runs cut off after {args.deadline:g} s ({PACED_INTERVALS + 1.5:g} intervals); "
        f"{args.loop_runs} runs per loop figure, {args.runs} per other figure, {args.import_runs} per import figure; "
        f"{args.file_mb} MB files"
    )
    info = {**info, "load average at end (1/5/15 min)": "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())}
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in info.items())
    return f"""# Benchmark results

Ours (`airflow-provider-openai-batch`) side by side with the official `apache-airflow-providers-openai`,
in the same run, against local loopback servers. Each figure is the median of several runs.
Ratio is ours / official (lower is better for times, lag, memory, CPU and connections; higher is better
for poll rates). A figure marked `>` comes from runs cut off at the deadline: the true value is larger.

{table}

## Targets

{chr(10).join(target_lines)}

{"## What limits the missed targets" + chr(10) + chr(10) + chr(10).join(notes) if notes else "All targets met."}

## Machine and run

{machine_lines}
- parameters: {params}
- total benchmark time: {elapsed / 60:.1f} min

## How it measures

1. **Triggerer event loop**: N `OpenAIBatchTrigger.run()` generators consumed concurrently in one asyncio
   loop beside a ticker that sleeps 10 ms and records how late it wakes (max, p99). Cold start included: a
   fresh process that has imported only the trigger module, the triggers started as Airflow's triggerer starts
   them (one task each, one per loop iteration). The server (`benchmarks/loopback.py`, asyncio, own process)
   holds the N batches (newest first for `GET /v1/batches`) and answers every request after the latency; a
   batch completes a fixed time after it is first reported. Requests per poll interval: requests arriving from
   one interval after the first until the batches complete (for the realistic interval: in the first
   interval). Loop CPU per waiting batch per interval: the process's CPU time / (N x intervals run). TCP
   connections: accepted by the server during the run. Freshness: the worst time from a batch turning
   completed (server clock) to its trigger's event (same machine clock), in intervals. Memory: N triggers
   waiting past their first poll; traced Python allocations (tracemalloc) and gc-tracked objects, before and
   after, per trigger, the one-off imports done first. The official trigger calls its synchronous
   `OpenAIHook.get_batch` inside the loop, which blocks it for a whole request each poll; its runs are cut off
   at the deadline by a watchdog thread, the stall in progress counting as lag.
   For attribution: the loop thread's longest CPU time between two ticks (`time.thread_time()`: what the
   code on the loop held it for, whatever else the machine ran), every full garbage collection during the run
   (`gc.callbacks`) with its wall-clock duration, the load average, and one more run per provider with the
   start-up heap collected (`gc.collect()`) before the triggers start, which leaves what they set off themselves.
2. **CPU and connections**: one trigger polling back to back (5 ms interval, no latency) for
   {args.single_polls} polls, after a warm-up trigger in the same process (process-wide lazy set-up done):
   process CPU time / polls (the trigger's own connection lookup and client set-up included), and TCP
   connections accepted by the server per 100 polls;
   then 3 triggers polling every {KEEPALIVE_INTERVAL} s (just over httpx's default 5 s keep-alive expiry; both
   triggers default to 60 s) for ~{KEEPALIVE_POLLS} polls each: connections opened after each trigger's
   first one, per 100 polls, at a realistic pace.
3. **Files**: the emulator (`python -m airflow_provider_openai_batch.emulator`, own process) receives the
   upload (ours `OpenAIBatchHook.upload_file`, official `OpenAIHook.upload_file`) and serves the download
   (ours `OpenAIBatchHook.download_file`, official `hook.conn.files.content(id).content` written to disk). Each
   run is a fresh process, warmed up with a small file; peak extra RSS = VmHWM during the transfer (reset
   through `/proc/self/clear_refs`) minus RSS before it. One more run per case measures the tracemalloc peak.
4. **Import cost**: a fresh interpreter times `import airflow.sdk`, then the module; the figure is the
   second time (what every DAG parse pays on top of the SDK). Bytecode is compiled beforehand (this
   environment sets PYTHONDONTWRITEBYTECODE; a deployed Airflow has warm .pyc files).
5. **Throughput**: `validate_batch_input(path, endpoint="/v1/chat/completions")` over a generated batch
   input, `iter_results_file` over a generated output file. The official provider has neither.

## How to reproduce

```
make bench                        # creates .venv-bench (uv sync --locked --group bench), then runs the suite
.venv-bench/bin/python -m benchmarks.run --help    # parameters: latency, poll interval, N, runs, file size
```

The official provider is installed only into `.venv-bench` (the `bench` dependency group), never as a
runtime dependency.
"""


def compile_bytecode() -> None:
    """Write .pyc files for the environment and this repository.

    Neither uv nor an interpreter run with PYTHONDONTWRITEBYTECODE writes them, and without them every
    import compiles from source: import figures and worker start-up would measure the compiler, not what
    a deployed Airflow (with warm bytecode) pays. Quick when they are up to date.
    """
    import sysconfig

    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    log("compiling bytecode (once per environment)")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", *paths, "airflow_provider_openai_batch", "benchmarks"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,  # a stray unparsable file in some package must not stop the benchmark
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark ours against apache-airflow-providers-openai.")
    parser.add_argument("--n", type=int, nargs="+", default=[200, 1000], help="concurrent triggers per loop run")
    parser.add_argument("--latency", type=float, default=0.25, help="server latency per poll, seconds")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="stress interval: N / interval polls/s")
    parser.add_argument("--big-n", type=int, default=10_000, help="triggers of the realistic run (0: skip it)")
    parser.add_argument("--big-interval", type=float, default=60.0, help="poll interval of the realistic run")
    parser.add_argument("--complete-after", type=float, default=10.5, help="seconds from first poll to completed")
    parser.add_argument("--deadline", type=float, default=20.0, help="cut a loop run off after this many seconds")
    parser.add_argument("--loop-runs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs per file, CPU and throughput figure")
    parser.add_argument("--import-runs", type=int, default=5)
    parser.add_argument("--single-polls", type=int, default=200)
    parser.add_argument("--file-mb", type=int, default=200)
    parser.add_argument("--job-lines", type=int, default=120_000, help="lines of the large-job input (~3.8 KB each)")
    parser.add_argument("--job-runs", type=int, default=1, help="runs of the large job (each ~450 MB through)")
    parser.add_argument(
        "--job-loop",
        type=float,
        nargs=3,
        default=[50, 10, 10.0],
        metavar=("JOBS", "SHARDS", "INTERVAL"),
        help="job triggers waiting in one loop, batches each, poll interval",
    )
    parser.add_argument("--only", nargs="+", choices=["loop", "files", "imports", "throughput", "job"])
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    only = set(args.only or ["loop", "files", "imports", "throughput", "job"])

    started = time.monotonic()
    info = machine()
    compile_bytecode()
    workdir = Path(tempfile.mkdtemp(prefix="openai-batch-bench-"))
    try:
        rows: list[Row] = []
        input_path = workdir / "batch_input.jsonl"
        output_path = workdir / "batch_output.jsonl"
        if only & {"files", "throughput"}:
            from benchmarks.data import write_batch_input, write_batch_output

            log(f"writing {args.file_mb} MB batch input and output files")
            write_batch_input(input_path, args.file_mb * 1_000_000)
            write_batch_output(output_path, args.file_mb * 1_000_000)
        steps: list[tuple[str, Callable[[], list[Row]]]] = [
            ("loop", lambda: loop_rows(args, bench_loop(args, workdir))),
            ("files", lambda: bench_files(args, workdir, input_path)),
            ("imports", lambda: bench_imports(args)),
            ("throughput", lambda: bench_throughput(args, workdir, input_path, output_path)),
            ("job", lambda: bench_job(args, workdir)),
        ]
        for name, step in steps:
            if name in only:
                log(f"--- {name}")
                rows += step()
        text = report(rows, args, info, time.monotonic() - started)
    except Exception:
        traceback.print_exc()
        print("benchmark broke: see the error above", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.write_text(text)
    print(text.split("## How it measures")[0].rstrip())
    print(f"\nwritten to {args.output}")
    if args.output == RESULTS and update_performance_page(text):
        print(f"and the results in {PERFORMANCE_PAGE}")
    return 0


def update_performance_page(results: str) -> bool:
    """Put the latest table, targets and machine between the docs page's bench markers; False if it has none."""
    if not PERFORMANCE_PAGE.exists():
        return False
    page = PERFORMANCE_PAGE.read_text()
    if BENCH_START not in page or BENCH_END not in page:
        return False
    head, rest = page.split(BENCH_START, 1)
    _, tail = rest.split(BENCH_END, 1)
    body = results.split("## How it measures")[0].split("\n", 1)[1].strip()  # without the title line
    body = body.replace("## ", "### ")  # nested under the page's Results heading
    PERFORMANCE_PAGE.write_text(f"{head}{BENCH_START}\n{body}\n{BENCH_END}{tail}")
    return True


if __name__ == "__main__":
    sys.exit(main())
