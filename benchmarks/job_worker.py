"""Worker: the large-job figures of issue #14, in a fresh process.

``python -m benchmarks.job_worker --input FILE --workdir DIR --out FILE``

1. **Split** the input with the job layer (every line checked, OpenAI's per-batch limits): wall time and
   peak extra RSS (VmHWM reset to the current RSS after a warm-up, minus the RSS before).
2. **The operator end to end** against the emulator that ``bench_ours`` points at (non-deferrable, so the
   whole job runs here): shards, their lines and bytes, and the merged output's ``custom_id`` sequence
   compared with the input's, line by line.
3. **Merge** alone, with the job layer, from the shard batches' result files (downloaded first, not timed):
   wall time and peak extra RSS.
4. **Clear after 2 of 3 shard batches exist**: an in-process emulator fails the third create once; the task
   runs again; new batches and duplicate idempotency tags are counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections import Counter
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

from benchmarks.common import OUR_CONN_ID, peak_rss_mb, reset_peak_rss, rss_mb, write_result

CHAT = "/v1/chat/completions"


class FakeTI:
    """Just enough of a task instance for the operator: identity and a recording ``xcom_push``."""

    def __init__(self, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = "bench", task_id, "run", -1, 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def custom_ids(path: Path) -> Iterator[str]:
    with open(path, "rb") as handle:
        for line in handle:
            yield json.loads(line)["custom_id"]


def same_order(input_path: Path, output_path: Path) -> tuple[bool, int]:
    """Whether the output's ids are the input's, line by line; and how many lines were compared."""
    compared = 0
    for expected, found in zip_longest(custom_ids(input_path), custom_ids(output_path)):
        compared += 1
        if expected != found:
            return False, compared
    return True, compared


def measure(step: Any) -> tuple[Any, float, float, float]:
    """Run ``step()``: its result, wall seconds, CPU seconds and peak extra RSS (MB) over the RSS before it.

    CPU time is reported beside wall time: on a shared machine the wall time also holds the time the
    process waited for a core.
    """
    gc.collect()
    base = rss_mb()
    reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    result = step()
    return result, time.perf_counter() - started, time.process_time() - cpu, peak_rss_mb() - base


def warm_up(workdir: Path) -> None:
    """Import and run split and merge once on a tiny input, so that the measured runs load nothing."""
    from airflow_provider_openai_batch.job import ResultFile, ShardLimits, merge_results, split_input

    small = workdir / "warm.jsonl"
    lines = [{"custom_id": f"w{i}", "method": "POST", "url": CHAT, "body": {"model": "m"}} for i in range(3)]
    small.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (workdir / "warm").mkdir()
    with open(small, "rb") as stream:
        plan = split_input(stream, workdir / "warm", endpoint=CHAT, limits=ShardLimits(), source="warm").plan
    answer = workdir / "warm_out.jsonl"
    answer.write_text("".join(json.dumps({"id": "x", "custom_id": f"w{i}"}) + "\n" for i in range(3)))
    with open(small, "rb") as stream, open(workdir / "o", "wb") as out, open(workdir / "e", "wb") as err:
        merge_results(stream, [ResultFile(answer, ok=True)], out, err, plan=plan, workdir=workdir / "warm")


def clear_after_two_of_three(workdir: Path) -> dict[str, Any]:
    import os

    from airflow_provider_openai_batch.emulator import EmulatorServer
    from airflow_provider_openai_batch.hooks.openai_batch import IDEMPOTENCY_METADATA_KEY
    from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

    source = workdir / "clear.jsonl"
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": CHAT, "body": {"model": "gpt-4o-mini", "messages": []}}
        for i in range(30)
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with EmulatorServer(phase_seconds=0.05) as emulator:
        os.environ["AIRFLOW_CONN_BENCH_CLEAR"] = json.dumps(
            {"conn_type": "openai_batch", "password": "sk-emulator", "host": emulator.base_url}
        )
        emulator.faults.add("POST /v1/batches", "status", status=400, after=2, times=1)
        ti = FakeTI("clear")

        def run() -> dict[str, Any]:
            op = OpenAIBatchJobOperator(
                task_id="clear",
                endpoint=CHAT,
                input_file=str(source),
                destination=str(workdir / "clear-out"),
                conn_id="bench_clear",
                max_requests_per_batch=10,
                deferrable=False,
                poll_interval=0.05,
            )
            return op.execute({"ti": ti})  # type: ignore[arg-type]

        try:
            run()
        except Exception as exc:  # the injected failure of the third create
            first_error = type(exc).__name__
        else:
            raise RuntimeError("the injected create failure did not happen")
        before = len(emulator.batches)
        manifest = run()
        tags = Counter(b["metadata"][IDEMPOTENCY_METADATA_KEY] for b in emulator.batches.values())
        return {
            "first_try": first_error,
            "batches_after_first_try": before,
            "new_batches": len(emulator.batches) - before,
            "duplicates": sum(count - 1 for count in tags.values()),
            "reused": sum(1 for shard in manifest["shards"] if shard["reused"]),
            "shards": len(manifest["shards"]),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.job import ResultFile, ShardLimits, merge_results, split_input
    from airflow_provider_openai_batch.operators.job import OpenAIBatchJobOperator

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    warm_up(work)
    size = args.input.stat().st_size

    (work / "split").mkdir()

    def split() -> Any:
        with open(args.input, "rb") as stream:
            return split_input(stream, work / "split", endpoint=CHAT, limits=ShardLimits(), source=str(args.input))

    result, split_s, split_cpu, split_peak = measure(split)
    plan = result.plan
    for path in result.paths:
        path.unlink()

    ti = FakeTI("job")
    op = OpenAIBatchJobOperator(
        task_id="job",
        endpoint=CHAT,
        input_file=str(args.input),
        destination=str(work / "merged"),
        conn_id=OUR_CONN_ID,
        deferrable=False,
        poll_interval=0.5,
    )
    started = time.perf_counter()
    manifest = op.execute({"ti": ti})  # type: ignore[arg-type]
    job_s = time.perf_counter() - started
    in_order, compared = same_order(args.input, Path(manifest["output"]["path"]))

    hook = OpenAIBatchHook(OUR_CONN_ID)
    results = []
    for shard in manifest["shards"]:
        for key, ok in (("output_file_id", True), ("error_file_id", False)):
            if shard[key]:
                path = work / f"{shard[key]}.jsonl"
                hook.download_file(shard[key], path)
                results.append(ResultFile(path, ok=ok))
    (work / "merge").mkdir()

    def merge() -> Any:
        with (
            open(args.input, "rb") as stream,
            open(work / "m_out.jsonl", "wb") as out,
            open(work / "m_err.jsonl", "wb") as err,
        ):
            return merge_results(stream, results, out, err, plan=plan, workdir=work / "merge")

    stats, merge_s, merge_cpu, merge_peak = measure(merge)
    results_bytes = sum(r.path.stat().st_size for r in results)

    write_result(
        args.out,
        {
            "input_bytes": size,
            "input_lines": plan.requests,
            "split_s": split_s,
            "split_mb_s": size / 1e6 / split_s,
            "split_cpu_mb_s": size / 1e6 / split_cpu,
            "split_peak_extra_mb": split_peak,
            "merge_s": merge_s,
            "merge_mb_s": size / 1e6 / merge_s,
            "merge_cpu_mb_s": size / 1e6 / merge_cpu,
            "merge_results_bytes": results_bytes,
            "merge_peak_extra_mb": merge_peak,
            "merged_lines": stats.output_lines,
            "job_s": job_s,
            "shards": [{"requests": s["requests"], "bytes": s["bytes"]} for s in manifest["shards"]],
            "in_order": in_order,
            "compared_lines": compared,
            "clear": clear_after_two_of_three(work),
        },
    )


if __name__ == "__main__":
    main()
