"""split_retry: a resubmission round's shards, numbered after the plan's and naming the input's own lines."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.resubmit import split_retry
from airflow_provider_openai_batch.job.split import split_input
from tests._kit.job_lines import CHAT, ids_of, request, write_lines


def test_a_round_is_split_within_the_plans_limits_and_names_the_input_lines(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(1, 10)])
    (tmp_path / "split").mkdir()
    with source.open("rb") as stream:
        plan = split_input(stream, tmp_path / "split", endpoint=CHAT, limits=ShardLimits(max_requests=3), source="in")
    assert len(plan.plan.shards) == 3
    again = [2, 5, 7, 9]  # the input lines whose results failed for a passing reason
    retry = write_lines(tmp_path / "retry.jsonl", [request(i) for i in again])
    numbers = tmp_path / "numbers.bin"
    numbers.write_bytes(b"".join(n.to_bytes(8, "little") for n in again))

    result = split_retry(retry, numbers, tmp_path, plan=plan.plan, round=2)

    shards = result.plan.shards
    assert [(s.index, s.round, s.first_line, s.last_line, s.requests) for s in shards] == [
        (3, 2, 2, 7, 3),
        (4, 2, 9, 9, 1),
    ]
    assert result.plan.source == "in (resubmission 2)"
    assert (result.plan.endpoint, result.plan.limits) == (CHAT, ShardLimits(max_requests=3))
    assert [path.parent for path in result.paths] == [tmp_path / "round-2"] * 2
    assert [ids_of(path) for path in result.paths] == [["req-2", "req-5", "req-7"], ["req-9"]]
    assert result.estimator is not None
