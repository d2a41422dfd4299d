"""Worker: local validation of a batch input and parsing of a batch output, in MB/s (ours only).

``python -m benchmarks.throughput_worker --input FILE --output FILE --out RESULT``

The official provider has neither a validator nor a results reader, so these are absolute figures.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.common import peak_rss_mb, reset_peak_rss, rss_mb, write_result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from airflow_provider_openai_batch.batch_input import CHAT_COMPLETIONS, iter_results_file, validate_batch_input

    in_mb = os.path.getsize(args.input) / 1e6
    out_mb = os.path.getsize(args.output) / 1e6

    before = rss_mb()
    reset_peak_rss()
    started = time.perf_counter()
    summary = validate_batch_input(args.input, endpoint=CHAT_COMPLETIONS)
    validate_s = time.perf_counter() - started
    validate_peak = peak_rss_mb() - before

    before = rss_mb()
    reset_peak_rss()
    started = time.perf_counter()
    results = 0
    for result in iter_results_file(args.output):
        results += result.ok
    parse_s = time.perf_counter() - started
    parse_peak = peak_rss_mb() - before

    write_result(
        args.out,
        {
            "validate_mb_s": in_mb / validate_s,
            "validate_s": validate_s,
            "validate_requests": summary.requests,
            "validate_peak_extra_mb": validate_peak,
            "parse_mb_s": out_mb / parse_s,
            "parse_results_s": results / parse_s,
            "parse_s": parse_s,
            "parse_results": results,
            "parse_peak_extra_mb": parse_peak,
        },
    )


if __name__ == "__main__":
    main()
