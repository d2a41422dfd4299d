"""merge_results: shard results back in input order, failures and unanswered lines in the error file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from airflow_provider_openai_batch.job.ids import leading_custom_id, result_custom_id
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.merge import InputChangedError, ResultFile, merge_results
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
