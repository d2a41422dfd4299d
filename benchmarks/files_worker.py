"""Worker: one upload or one download of a large file, in a fresh process, measuring peak extra memory.

``python -m benchmarks.files_worker --impl ours|official --op upload|download --path FILE [--file-id ID]``

Everything the operation needs is imported and warmed up first (a small upload, and for a download a
small download), then the peak RSS (VmHWM) is reset to the current RSS; the figure is the peak RSS during
the operation minus the RSS before it. Prints wall time, peak extra RSS and, with ``--tracemalloc``, the
peak of Python allocations (slower; reported separately).

Ours: ``OpenAIBatchHook.upload_file(path)`` / ``download_file(file_id, path)``. The official provider:
``OpenAIHook.upload_file(path, purpose="batch")`` and, as its users fetch results,
``hook.conn.files.content(file_id)`` with ``.content`` written to disk.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.common import (
    OFFICIAL_CONN_ID,
    OUR_CONN_ID,
    OURS,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    write_result,
)


class Ours:
    def __init__(self) -> None:
        from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

        self.hook = OpenAIBatchHook(OUR_CONN_ID)

    def upload(self, path: str) -> str:
        return str(self.hook.upload_file(path).id)

    def download(self, file_id: str, path: str) -> int:
        return int(self.hook.download_file(file_id, path))


class Official:
    def __init__(self) -> None:
        from airflow.providers.openai.hooks.openai import OpenAIHook

        self.hook = OpenAIHook(conn_id=OFFICIAL_CONN_ID)

    def upload(self, path: str) -> str:
        return str(self.hook.upload_file(path, purpose="batch").id)

    def download(self, file_id: str, path: str) -> int:
        content = self.hook.conn.files.content(file_id)
        data = content.content
        Path(path).write_bytes(data)
        return len(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", required=True)
    parser.add_argument("--op", choices=["upload", "download"], required=True)
    parser.add_argument("--path", required=True, help="file to upload, or directory to download into")
    parser.add_argument("--file-id", help="file to download")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    client: Any = Ours() if args.impl == OURS else Official()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(args.out)) as scratch:
        small = Path(scratch) / "warmup.jsonl"
        small.write_text(
            '{"custom_id":"w","method":"POST","url":"/v1/chat/completions",'
            '"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}\n'
        )
        small_id = client.upload(str(small))  # imports, connection lookup, client, keep-alive connection
        if args.op == "download":
            client.download(small_id, str(Path(scratch) / "warmup.out"))
        target = str(Path(args.path) / "downloaded.jsonl") if args.op == "download" else args.path

        gc.collect()
        if args.tracemalloc:
            tracemalloc.start()
        before = rss_mb()
        reset_peak_rss()
        started = time.perf_counter()
        cpu_started = time.process_time()
        if args.op == "upload":
            result: Any = client.upload(target)
        else:
            assert args.file_id
            result = client.download(args.file_id, target)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        peak = peak_rss_mb()
        traced = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
        if args.op == "download":
            size = os.path.getsize(target)
            os.unlink(target)
        else:
            size = os.path.getsize(target)
    write_result(
        args.out,
        {
            "op": args.op,
            "impl": args.impl,
            "result": result,
            "bytes": size,
            "wall": wall,
            "cpu": cpu,
            "rss_before_mb": before,
            "peak_extra_mb": max(0.0, peak - before),
            "tracemalloc_peak_mb": traced,
        },
    )


if __name__ == "__main__":
    main()
