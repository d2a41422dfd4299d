"""Worker: N batch triggers of one provider in one asyncio loop, as the triggerer runs them.

``python -m benchmarks.loop_worker --impl ours|official --n N --poll-interval S --deadline S``

Each trigger's ``run()`` generator is consumed concurrently in one loop, beside a ticker coroutine that
sleeps 10 ms and records how late it wakes (the loop lag every other trigger in the triggerer would
suffer). Triggers are started as Airflow's triggerer starts them: one task each, one per loop iteration,
in a fresh process with nothing warmed up (cold start included). Writes one JSON object: wall time until
every trigger fired, lag samples summary, CPU seconds, events by status and when each fired. A watchdog
thread ends a run that passes ``--deadline`` (a loop blocked by synchronous I/O cannot end itself) and
reports what it saw so far, with the stall in progress counted as lag.

For attribution it also reports the loop thread's longest CPU time between two ticks (what the code on the
loop held it for, machine load excluded), every full garbage collection (and any collection over 5 ms) with
its duration, and every tick over 10 ms late. ``--collect-first`` collects the start-up heap before the
triggers start (what is left is set off by the triggers); ``--time-callbacks FILE`` logs every loop callback
over 10 ms with what it ran (diagnosis).

``--memory S`` measures instead: the traced Python memory and the objects the N triggers hold once they
have waited ``S`` seconds (past their first poll), per trigger; the modules they use are imported first,
so that one-off imports are not counted as the triggers' memory.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from benchmarks.common import OFFICIAL, OFFICIAL_CONN_ID, OUR_CONN_ID, OURS, percentile, raise_fd_limit, write_result

TICK = 0.010


def make_triggers(impl: str, n: int, poll_interval: float, shards: int = 0) -> list[Any]:
    if impl == OURS:
        # Only what the triggerer imports itself: the trigger's module. What the first run() needs is loaded
        # by the triggers (off the loop), inside the measured run.
        if shards:  # N jobs of ``shards`` batches each: one job trigger per job, as the job operator defers
            from airflow_provider_openai_batch.triggers.job import OpenAIBatchJobTrigger

            return [
                OpenAIBatchJobTrigger(
                    conn_id=OUR_CONN_ID,
                    batch_ids=[f"batch_bench_{i * shards + k}" for k in range(shards)],
                    poll_interval=poll_interval,
                )
                for i in range(n)
            ]
        from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

        return [
            OpenAIBatchTrigger(conn_id=OUR_CONN_ID, batch_id=f"batch_bench_{i}", poll_interval=poll_interval)
            for i in range(n)
        ]
    from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger as OfficialTrigger

    # 2.x takes ``timeout``; older releases only ``end_time``.
    if "timeout" in inspect.signature(OfficialTrigger).parameters:
        bound: dict[str, Any] = {"timeout": 3600.0}
    else:
        bound = {"end_time": time.time() + 3600.0}
    return [
        OfficialTrigger(conn_id=OFFICIAL_CONN_ID, batch_id=f"batch_bench_{i}", poll_interval=poll_interval, **bound)
        for i in range(n)
    ]


class Run:
    def __init__(self, n: int, out: str) -> None:
        self.n = n
        self.out = out
        self.lags: list[float] = []
        self.last_wake = time.monotonic()
        self.events: Counter[str] = Counter()
        self.event_at: dict[str, float] = {}
        self.cpu_lag_max = 0.0
        self.lag_peak = 0.0
        self.heap_objects = 0
        #: (seconds since the start, lag in ms) of every tick over 10 ms late.
        self.stalls: list[tuple[float, float]] = []
        self.lag_max_at = 0.0
        self.cpu_lag_max_at = 0.0
        #: Collections of the oldest generation (full collections) and any collection over 5 ms: (generation,
        #: seconds since the start, duration in ms, whether on the loop's thread).
        self.collections: list[tuple[int, float, float, bool]] = []
        self.done = 0
        self.started = time.monotonic()
        self.cpu_started = time.process_time()
        self.finished_at: float | None = None
        self.lock = threading.Lock()
        self.reported = False

    def report(self, *, timed_out: bool) -> dict[str, Any]:
        now = time.monotonic()
        lags = list(self.lags)
        stall = max(0.0, now - self.last_wake - TICK) if timed_out else 0.0
        return {
            "n": self.n,
            "completed": self.done,
            "timed_out": timed_out,
            "wall": (self.finished_at or now) - self.started,
            "cpu": time.process_time() - self.cpu_started,
            "lag_max": max([*lags, stall]) if lags or stall else 0.0,
            "lag_p99": percentile([*lags, stall] if timed_out else lags, 99) if lags or stall else 0.0,
            "lag_samples": len(lags),
            "events": dict(self.events),
            "event_at": self.event_at,
            "cpu_lag_max": self.cpu_lag_max,
            "lag_max_at": self.lag_max_at,
            "cpu_lag_max_at": self.cpu_lag_max_at,
            "collections": self.collections,
            "stalls": self.stalls,
            "heap_objects": self.heap_objects,
        }

    def emit(self, *, timed_out: bool) -> None:
        with self.lock:
            if self.reported:
                return
            self.reported = True
            write_result(self.out, self.report(timed_out=timed_out))


async def ticker(run: Run, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + TICK
        cpu = time.thread_time()
        await asyncio.sleep(TICK)
        woke = loop.time()
        run.last_wake = time.monotonic()
        lag = max(0.0, woke - expected)
        if lag > run.lag_peak:
            run.lag_peak, run.lag_max_at = lag, run.last_wake - run.started
        run.lags.append(lag)
        if lag > 0.010:
            run.stalls.append((round(run.last_wake - run.started, 3), round(1000 * lag, 1)))
        # The loop thread's own CPU time between two ticks: what the code on the loop held it for, whatever
        # else the machine runs (a busy machine delays the whole process, which is no stall of the loop).
        held = time.thread_time() - cpu
        if held > run.cpu_lag_max:
            run.cpu_lag_max, run.cpu_lag_max_at = held, run.last_wake - run.started


async def consume(trigger: Any, run: Run) -> None:
    async for event in trigger.run():
        payload = event.payload if isinstance(event.payload, dict) else {}
        run.events[str(payload.get("status"))] += 1
        run.event_at[str(payload.get("batch_id") or getattr(trigger, "batch_id", ""))] = time.monotonic()
        break
    run.done += 1


async def start(triggers: list[Any], run: Run) -> list[asyncio.Task[None]]:
    """Start the triggers as Airflow's triggerer does: one task each, yielding to the loop after each."""
    tasks = []
    for trigger in triggers:
        tasks.append(asyncio.create_task(consume(trigger, run)))
        await asyncio.sleep(0)
    return tasks


async def measure_memory(impl: str, triggers: list[Any], settle: float, out: str) -> None:
    """Traced bytes and gc-tracked objects per waiting trigger, after ``settle`` seconds of waiting."""
    import gc
    import tracemalloc

    if impl == OURS:  # what the triggers import and build once per process: not per-trigger memory
        from airflow_provider_openai_batch.triggers import _shared

        await _shared.warm_up()
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run = Run(len(triggers), out)
    tasks = await start(triggers, run)
    await asyncio.sleep(settle)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    objects_after = len(gc.get_objects())
    waiting = sum(1 for task in tasks if not task.done())
    write_result(
        out,
        {
            "n": len(triggers),
            "waiting": waiting,
            "bytes_per_trigger": (after - before) / len(triggers),
            "objects_per_trigger": (objects_after - objects_before) / len(triggers),
        },
    )
    os._exit(0)


def record_collections(run: Run) -> None:
    """Record full collections (and any over 5 ms) in ``run.collections``, to attribute loop stalls."""
    import gc

    loop_thread = threading.get_ident()
    began = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            began[0] = now
            return
        took = 1000 * (now - began[0])
        if info["generation"] == 2 or took > 5:
            run.collections.append(
                (info["generation"], time.monotonic() - run.started, took, threading.get_ident() == loop_thread)
            )

    gc.callbacks.append(callback)
    run.heap_objects = len(gc.get_objects())


def time_callbacks(path: str) -> None:
    """Diagnosis: every loop callback that runs over 10 ms, with its wall and thread CPU time and what it ran
    (a task's coroutine and where it stopped), one JSON line each, to ``path``."""
    import json

    original = asyncio.events.Handle._run
    out = open(path, "w")  # noqa: SIM115 (open for the process's life)
    t0 = time.monotonic()

    def timed(handle: asyncio.events.Handle) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        original(handle)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if wall > 0.010:
            callback = getattr(handle, "_callback", None)
            owner = getattr(callback, "__self__", None)
            what = repr(callback)[:200]
            if isinstance(owner, asyncio.Task):
                coro = owner.get_coro()
                frames = []
                while coro is not None and hasattr(coro, "cr_frame"):
                    frame = coro.cr_frame
                    if frame is not None:
                        frames.append(
                            f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {frame.f_code.co_name}"
                        )
                    coro = coro.cr_await
                what = " > ".join(frames) or repr(owner)[:200]
            out.write(json.dumps({"t": round(time.monotonic() - t0, 3), "ms": round(1000 * wall, 1),
                                  "cpu_ms": round(1000 * cpu, 1), "what": what}) + "\n")  # fmt: skip
            out.flush()

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]


async def main_async(
    triggers: list[Any],
    run: Run,
    *,
    with_ticker: bool = True,
    warmup: Any = None,
    gc_freeze: bool = False,
    collect_first: bool = False,
) -> None:
    if warmup is not None:  # one trigger run to the end first: the process-wide lazy set-up is then done
        await consume(warmup, Run(1, ""))
    if gc_freeze:
        # What Airflow's dag-processor and LocalExecutor do after start-up: full collections then skip the
        # heap of imported modules and only walk what was made since.
        import gc

        gc.collect()
        gc.freeze()
    if collect_first:
        # Diagnosis: a full collection of the start-up heap now, so that the run shows what the triggers' own
        # allocations set off (a fresh process collects its start-up heap once, whatever runs in it).
        import gc

        gc.collect()
    record_collections(run)
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(run, stop) if with_ticker else stop.wait())
    await asyncio.sleep(0.05)  # the ticker is running before the first trigger starts
    run.started = time.monotonic()
    run.cpu_started = time.process_time()
    await asyncio.gather(*await start(triggers, run))
    run.finished_at = time.monotonic()
    stop.set()
    await tick


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=[OURS, OFFICIAL], required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--poll-interval", type=float, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="seconds after which the run is cut short")
    parser.add_argument("--warmup", action="store_true", help="run one warm-up trigger first (not measured)")
    parser.add_argument("--no-ticker", action="store_true", help="no lag ticker (for CPU per poll)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() the start-up heap before the run")
    parser.add_argument("--collect-first", action="store_true", help="gc.collect() the start-up heap before the run")
    parser.add_argument("--shards", type=int, default=0, help="N job triggers of this many batches each (ours)")
    parser.add_argument("--memory", type=float, help="measure memory per trigger after this many seconds instead")
    parser.add_argument("--out", required=True, help="where the JSON result is written")
    parser.add_argument("--time-callbacks", help="write every loop callback over 10 ms here (diagnosis)")
    parser.add_argument("--profile", help="write cProfile stats of the run to this file (diagnosis only)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    triggers = make_triggers(args.impl, args.n, args.poll_interval, args.shards)
    if args.memory is not None:
        asyncio.run(measure_memory(args.impl, triggers, args.memory, args.out))
    warmup = None
    if args.warmup:
        warmup = make_triggers(args.impl, 1, args.poll_interval)[0]
        warmup.batch_id = "warmup_0"
    run = Run(args.n, args.out)

    def watchdog() -> None:
        time.sleep(args.deadline)
        run.emit(timed_out=True)
        sys.stdout.flush()
        os._exit(0)  # the loop may be blocked in a synchronous call: nothing else can end it

    threading.Thread(target=watchdog, daemon=True).start()
    if args.time_callbacks:
        time_callbacks(args.time_callbacks)
    options = {
        "with_ticker": not args.no_ticker,
        "warmup": warmup,
        "gc_freeze": args.gc_freeze,
        "collect_first": args.collect_first,
    }
    if args.profile:
        import cProfile

        with cProfile.Profile() as profile:
            asyncio.run(main_async(triggers, run, **options))
        profile.dump_stats(args.profile)
    else:
        asyncio.run(main_async(triggers, run, **options))
    run.emit(timed_out=False)


if __name__ == "__main__":
    main()
