"""merge_results: shard results back in input order, failures and unanswered lines in the error file."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
from pathlib import Path

import pytest

from airflow_provider_openai_batch.error_codes import classify_error
from airflow_provider_openai_batch.job.ids import leading_custom_id, result_custom_id
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.merge import (
    InputChangedError,
    MergeStats,
    Overdue,
    ResultFile,
    merge_results,
    missing_line,
)
from airflow_provider_openai_batch.job.plan import JobPlan
from airflow_provider_openai_batch.job.split import split_input
from tests._kit.job_lines import CHAT, answer, failure, ids_of, request, write_lines


def plan_for(source: Path, work: Path, **limits: int) -> JobPlan:
    work.mkdir(exist_ok=True)
    with source.open("rb") as stream:
        return split_input(stream, work, endpoint=CHAT, limits=ShardLimits(**limits), source=str(source)).plan


def merge(source: Path, plan: JobPlan, results: list[ResultFile], tmp_path: Path):  # type: ignore[no-untyped-def]
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    with source.open("rb") as stream, out.open("wb") as o, err.open("wb") as e:
        stats = merge_results(stream, results, o, e, plan=plan, workdir=tmp_path)
    return stats, out, err


def shuffled(path: Path, lines: list[dict[str, object]], seed: int) -> ResultFile:
    random.Random(seed).shuffle(lines)
    write_lines(path, lines)
    return ResultFile(path, ok="error" not in path.name)


@pytest.mark.parametrize("first_key", [True, False])
def test_results_come_back_in_input_order(tmp_path: Path, first_key: bool) -> None:
    n = 50
    source = write_lines(tmp_path / "in.jsonl", [request(i, first_key=first_key) for i in range(n)])
    plan = plan_for(source, tmp_path / "work", max_requests=20)
    failing = {"req-3", "req-27"}
    missing = {"req-44"}
    results = []
    for shard in plan.shards:
        ids = [f"req-{i}" for i in range(shard.first_line - 1, shard.last_line)]
        answers = [answer(c) for c in ids if c not in failing | missing]
        results.append(shuffled(tmp_path / f"s{shard.index}_output.jsonl", answers, 1))
        errors = [failure(c) for c in ids if c in failing]
        if errors:
            results.append(shuffled(tmp_path / f"s{shard.index}_error.jsonl", errors, 2))

    stats, out, err = merge(source, plan, results, tmp_path)

    expected = [f"req-{i}" for i in range(n)]
    assert ids_of(out) == [c for c in expected if c not in failing | missing]
    assert ids_of(err) == [c for c in expected if c in failing | missing]
    assert (stats.output_lines, stats.error_lines, stats.missing, stats.unexpected) == (47, 3, 1, 0)
    assert stats.error_codes == {"invalid_request_error": 2, "missing_result": 1}
    assert stats.output_bytes == out.stat().st_size and stats.error_bytes == err.stat().st_size
    assert json.loads(err.read_text().splitlines()[-1])["error"]["code"] == "missing_result"


def test_an_answer_wins_over_an_error_for_the_same_line(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(3)])
    plan = plan_for(source, tmp_path / "work")
    first = write_lines(tmp_path / "a_error.jsonl", [failure("req-1", "server_error"), failure("req-2")])
    retry = write_lines(tmp_path / "b_output.jsonl", [answer("req-1"), answer("req-0")])

    stats, out, err = merge(source, plan, [ResultFile(first, ok=False), ResultFile(retry, ok=True)], tmp_path)

    assert ids_of(out) == ["req-0", "req-1"] and ids_of(err) == ["req-2"]
    assert stats.error_codes == {"invalid_request_error": 1}


def test_results_for_lines_not_in_the_input_are_counted_and_left_out(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(0)])
    plan = plan_for(source, tmp_path / "work")
    extra = write_lines(tmp_path / "x_output.jsonl", [answer("req-0"), answer("stranger")])

    stats, out, _ = merge(source, plan, [ResultFile(extra, ok=True)], tmp_path)

    assert ids_of(out) == ["req-0"] and stats.unexpected == 1


def test_a_changed_input_is_refused(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(3)])
    plan = plan_for(source, tmp_path / "work")
    write_lines(source, [request(i) for i in range(4)])

    with pytest.raises(InputChangedError, match="changed since it was split"):
        merge(source, plan, [], tmp_path)


def test_ids_are_read_from_the_line_start_or_parsed() -> None:
    assert leading_custom_id(b'{"custom_id": "a\\"b", "body": {}}\n') == 'a"b'
    assert leading_custom_id(b'{"body": {"custom_id": "x"}, "custom_id": "y"}\n') is None
    assert result_custom_id(b'{"id": "batch_req_1", "custom_id": "r\\u00e9", "response": null}\n') == "ré"
    assert result_custom_id(b'{"response": {"body": {}}, "custom_id": "late"}\n') == "late"
    assert result_custom_id(b"not json\n") is None


def error_line(custom_id: str, code: str) -> dict[str, object]:
    """An error-file line for a request that never got an answer (expired, cancelled, ...)."""
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": None, "error": {"code": code}}


def raw(line: object) -> bytes:
    return json.dumps(line).encode() + b"\n"


def test_error_codes_are_counted_up_to_50_then_as_other() -> None:
    stats = MergeStats()
    for i in range(52):
        stats.count_code(f"code_{i}")
    stats.count_code("code_0")
    assert len(stats.error_codes) == 51
    assert (stats.error_codes["code_0"], stats.error_codes["code_49"], stats.error_codes["other"]) == (2, 1, 2)
    assert "code_50" not in stats.error_codes


def test_a_line_without_a_result_gets_a_missing_result_line() -> None:
    assert (
        missing_line("req-é")
        == (
            '{"id":null,"custom_id":"req-é","response":null,"error":{"code":"missing_result","message":"no shard '
            'batch returned a result for this request (its batch failed, or ended before it ran)"}}\n'
        ).encode()
    )


def test_retryable_failures_are_copied_to_a_retry_input_with_their_line_numbers(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(7)])
    source.write_bytes(source.read_bytes().rstrip(b"\n"))  # the last line without its newline
    plan = plan_for(source, tmp_path / "work")
    answers = write_lines(tmp_path / "r_output.jsonl", [answer("req-0")])
    outcomes = [
        error_line("req-1", "server_error"),
        failure("req-2"),  # the request is wrong: not run again
        error_line("req-3", "batch_expired"),
        # req-4: no result at all (missing): the service left it unrun, so it runs again
        error_line("req-5", "batch_cancelled"),
        error_line("req-6", "rate_limit_exceeded"),
    ]
    results = tmp_path / "r_error.jsonl"
    results.write_bytes(b"\n".join(json.dumps(line).encode() for line in outcomes))  # no newline at the end either
    retry, numbers = tmp_path / "retry.jsonl", tmp_path / "numbers.bin"
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    with (
        source.open("rb") as stream,
        out.open("wb") as o,
        err.open("wb") as e,
        retry.open("wb") as r,
        numbers.open("wb") as n,
    ):
        stats = merge_results(
            stream,
            [ResultFile(answers, ok=True), ResultFile(results, ok=False)],
            o,
            e,
            plan=plan,
            workdir=tmp_path,
            retry=r,
            retry_lines=n,
        )
    lines = source.read_bytes().split(b"\n")
    assert retry.read_bytes() == b"".join(lines[i] + b"\n" for i in (1, 3, 4, 6))
    assert [int.from_bytes(numbers.read_bytes()[i : i + 8], "little") for i in (0, 8, 16, 24)] == [2, 4, 5, 7]
    assert numbers.stat().st_size == 32
    assert (stats.retryable, stats.retry_lines, stats.missing, stats.output_lines, stats.error_lines) == (4, 4, 1, 1, 6)
    assert stats.unrun == 3  # expired, missing, cancelled
    assert ids_of(err) == ["req-1", "req-2", "req-3", "req-4", "req-5", "req-6"]
    assert err.read_bytes().endswith(b'"error": {"code": "rate_limit_exceeded"}}\n')  # the missing newline added
    assert stats.error_codes == {
        "server_error": 1, "invalid_request_error": 1, "batch_expired": 1, "missing_result": 1,
        "batch_cancelled": 1, "rate_limit_exceeded": 1,
    }  # fmt: skip


def test_nothing_to_run_again_writes_no_retry_input(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(2)])
    plan = plan_for(source, tmp_path / "work")
    results = write_lines(tmp_path / "r_error.jsonl", [failure("req-0")])
    answers = write_lines(tmp_path / "r_output.jsonl", [answer("req-1")])
    retry = tmp_path / "retry.jsonl"
    files = [ResultFile(results, ok=False), ResultFile(answers, ok=True)]
    with source.open("rb") as stream, retry.open("wb") as r:
        stats = merge_results(stream, files, io.BytesIO(), io.BytesIO(), plan=plan, workdir=tmp_path, retry=r)
    assert (stats.retryable, stats.retry_lines, stats.missing, stats.output_lines) == (0, 0, 0, 1)
    assert retry.read_bytes() == b""


def test_blank_lines_and_lines_without_an_id_in_result_files_are_skipped(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(3)])
    plan = plan_for(source, tmp_path / "work")
    results = tmp_path / "r_output.jsonl"
    results.write_bytes(raw(answer("req-0")) + b"\n" + b"garbage\n" + b'{"no": "id"}\n' + raw(answer("req-2")))
    stats, out, err = merge(source, plan, [ResultFile(results, ok=True)], tmp_path)
    assert ids_of(out) == ["req-0", "req-2"] and ids_of(err) == ["req-1"]
    assert (stats.unexpected, stats.missing, stats.retryable, stats.retry_lines) == (2, 1, 1, 0)


def test_a_changed_input_is_named_with_both_hashes(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(3)])
    plan = plan_for(source, tmp_path / "work", max_bytes=1000)
    variants = [[request(i) for i in range(n)] for n in (1, 2, 4, 5, 6)] + [[request(0), request(1, pad=2000)]]
    hashes = []
    for i, lines in enumerate(variants):  # one line over-long for the plan's limits in the last
        write_lines(source, lines)
        new = hashlib.sha256(source.read_bytes()).hexdigest()
        (tmp_path / f"m{i}").mkdir()
        with pytest.raises(InputChangedError) as info:
            merge(source, plan, [], tmp_path / f"m{i}")
        hashes.append(new)
        if len(json.dumps(lines[-1])) < 1000:
            assert str(info.value) == (
                f"{source} changed since it was split into batches (SHA-256 {new[:12]}..., was {plan.sha256[:12]}...): "
                "its lines cannot be matched with the results. Keep a job's input unchanged until the job ends."
            )
    assert min(hashes) < plan.sha256 < max(hashes)  # changed inputs that sort before and after the original


def test_result_files_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ResultFile(Path("x"), ok=True).ok = False  # type: ignore[misc]


def test_retryable_lines_are_counted_without_a_retry_input_and_copied_whole_with_one(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(0), request(1)])
    plan = plan_for(source, tmp_path / "work")
    results = write_lines(tmp_path / "r_error.jsonl", [error_line("req-0", "timeout"), failure("req-1")])
    stats, _, _ = merge(source, plan, [ResultFile(results, ok=False)], tmp_path)
    assert (stats.retryable, stats.retry_lines) == (1, 0)
    (tmp_path / "again").mkdir()
    retry = io.BytesIO()
    with source.open("rb") as stream:
        merge_results(
            stream, [ResultFile(results, ok=False)], io.BytesIO(), io.BytesIO(), plan=plan, workdir=tmp_path / "again",
            retry=retry,
        )  # fmt: skip
    assert retry.getvalue() == source.read_bytes().splitlines(keepends=True)[0]  # the input read again from its start


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files in Linux /proc")
def test_the_merge_closes_the_result_files(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(0)])
    plan = plan_for(source, tmp_path / "work")
    results = write_lines(tmp_path / "r_output.jsonl", [answer("req-0")])
    merge(source, plan, [ResultFile(results, ok=True)], tmp_path)
    open_files = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is closed by now
            open_files.add(os.readlink(f"/proc/self/fd/{fd}"))
    assert str(results) not in open_files


def test_overdue_ranges_that_overlap_or_nest_are_merged() -> None:
    def covered(ranges: list[tuple[int, int]]) -> list[int]:
        lines = Overdue(ranges, "m")
        return [n for n in range(15) if lines.covers(n)]

    assert covered([(1, 2), (5, 10), (6, 7)]) == [1, 2, *range(5, 11)]  # nested in the last range
    assert covered([(1, 2), (5, 10), (6, 12)]) == [1, 2, *range(5, 13)]  # overlapping it
    assert covered([(1, 3), (5, 6)]) == [1, 2, 3, 5, 6]  # a one-line gap stays a gap


def test_only_cancelled_lines_of_a_batch_the_deadline_cancelled_become_deadline_exceeded(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(4)])
    plan = plan_for(source, tmp_path / "work")
    cut = write_lines(
        tmp_path / "cut_error.jsonl",
        [
            error_line("req-0", "batch_cancelled"),
            error_line("req-1", "authentication_error"),  # failed before the deadline cancelled the batch
            failure("req-2"),
        ],
    )
    other = write_lines(tmp_path / "other_error.jsonl", [failure("req-3")])  # in the deadline's lines, not cut
    out, err = io.BytesIO(), io.BytesIO()
    with source.open("rb") as stream:
        merge_results(
            stream,
            [ResultFile(cut, ok=False, overdue=True), ResultFile(other, ok=False)],
            out,
            err,
            plan=plan,
            workdir=tmp_path,
            overdue=Overdue([(1, 4)], "cut"),
        )
    codes = [
        (line["custom_id"], classify_error(json.dumps(line).encode())[0])
        for line in map(json.loads, err.getvalue().splitlines())
    ]
    assert codes == [
        ("req-0", "deadline_exceeded"),
        ("req-1", "authentication_error"),
        ("req-2", "invalid_request_error"),
        ("req-3", "invalid_request_error"),
    ]
