"""split_input: shards within limits, at line boundaries, one model each; every problem before any upload."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.exceptions import BatchInputError
from airflow_provider_openai_batch.job.limits import MAX_EMBEDDING_INPUTS, ShardLimits
from airflow_provider_openai_batch.job.split import embedding_inputs, iter_bounded_lines, split_input
from tests._kit.job_lines import CHAT, request, write_lines


def split(path: Path, workdir: Path, endpoint: str = CHAT, **limits: int):  # type: ignore[no-untyped-def]
    workdir.mkdir(exist_ok=True)
    with path.open("rb") as stream:
        return split_input(stream, workdir, endpoint=endpoint, limits=ShardLimits(**limits), source=str(path))


def test_request_limit_makes_contiguous_shards_that_rebuild_the_input(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(10)])

    result = split(source, tmp_path / "work", max_requests=4)

    plan = result.plan
    assert [s.requests for s in plan.shards] == [4, 4, 2]
    assert [(s.first_line, s.last_line) for s in plan.shards] == [(1, 4), (5, 8), (9, 10)]
    assert b"".join(p.read_bytes() for p in result.paths) == source.read_bytes()
    assert plan.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert plan.requests == 10 and plan.bytes == source.stat().st_size and plan.leading_ids
    for shard, path in zip(plan.shards, result.paths, strict=True):
        assert shard.bytes == path.stat().st_size


def test_byte_limit_splits_only_at_line_boundaries(tmp_path: Path) -> None:
    lines = [request(i, pad=(i * 37) % 300) for i in range(40)]
    source = write_lines(tmp_path / "in.jsonl", lines)

    result = split(source, tmp_path / "work", max_bytes=2000)

    assert len(result.paths) > 3
    for shard, path in zip(result.plan.shards, result.paths, strict=True):
        data = path.read_bytes()
        assert len(data) <= 2000 and data.endswith(b"\n")
        assert all(json.loads(line) for line in data.splitlines())
        assert shard.requests == data.count(b"\n")
    assert b"".join(p.read_bytes() for p in result.paths) == source.read_bytes()


def test_mixed_models_get_shards_of_their_own(tmp_path: Path) -> None:
    lines = [request(i, model="model-a" if i % 2 else "model-b") for i in range(9)]
    source = write_lines(tmp_path / "in.jsonl", lines)

    result = split(source, tmp_path / "work", max_requests=3)

    models = []
    for shard, path in zip(result.plan.shards, result.paths, strict=True):
        found = {json.loads(line)["body"]["model"] for line in path.read_text().splitlines()}
        assert found == {shard.model}
        models.append(shard.model)
    assert sorted(models) == ["model-a", "model-a", "model-b", "model-b"]
    assert sum(s.requests for s in result.plan.shards) == 9
    first_b = next(s for s in result.plan.shards if s.model == "model-b")
    assert (first_b.first_line, first_b.last_line) == (1, 5)  # lines 1, 3, 5 of model-b


def test_embedding_inputs_are_limited_per_shard(tmp_path: Path) -> None:
    lines = [
        {"custom_id": f"e-{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": list("abc")}}
        for i in range(5)
    ]
    source = write_lines(tmp_path / "in.jsonl", lines)

    result = split(source, tmp_path / "work", endpoint="/v1/embeddings", max_embedding_inputs=7)

    assert [s.embedding_inputs for s in result.plan.shards] == [6, 6, 3]
    assert [s.requests for s in result.plan.shards] == [2, 2, 1]


@pytest.mark.parametrize(
    ("body_input", "count"), [("text", 1), (["a", "b"], 2), ([1, 2, 3], 1), ([[1, 2], [3]], 2), ([], 1)]
)
def test_embedding_input_count(body_input: object, count: int) -> None:
    assert embedding_inputs({"input": body_input}) == count
    assert MAX_EMBEDDING_INPUTS == 50_000


def test_every_problem_is_reported_with_its_line_and_no_shard_is_left(tmp_path: Path) -> None:
    lines = [json.dumps(request(i)) for i in range(10)]
    lines[2] = "{not json"
    lines[8] = json.dumps(request(1))  # duplicate of line 2, in another shard
    lines[5] = json.dumps({**request(5), "url": "/v1/embeddings"})
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    work = tmp_path / "work"

    with pytest.raises(BatchInputError) as info:
        split(source, work, max_requests=4)

    found = [(p.line, p.code) for p in info.value.problems]
    assert found == [(3, "invalid_json"), (6, "url_mismatch"), (9, "duplicate_custom_id")]
    assert "first seen on line 2" in str(info.value)
    assert not list(work.glob("shard-*"))


def test_a_line_larger_than_a_shard_is_a_problem(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(0), request(1, pad=5000), request(2)])

    with pytest.raises(BatchInputError) as info:
        split(source, tmp_path / "work", max_bytes=1000)

    assert [(p.line, p.code) for p in info.value.problems] == [(2, "request_too_large")]


def test_too_many_embedding_inputs_in_one_request(tmp_path: Path) -> None:
    line = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": ["a"] * 5}}
    source = write_lines(tmp_path / "in.jsonl", [line])

    with pytest.raises(BatchInputError) as info:
        split(source, tmp_path / "work", endpoint="/v1/embeddings", max_embedding_inputs=4)

    assert [p.code for p in info.value.problems] == ["too_many_embedding_inputs"]


def test_ids_not_first_are_noted_and_a_missing_last_newline_is_added(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(request(0, first_key=False)) + "\n" + json.dumps(request(1)))

    result = split(source, tmp_path / "work", max_requests=1)

    assert not result.plan.leading_ids
    assert result.paths[1].read_bytes().endswith(b"}\n")


def test_empty_input_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"")

    with pytest.raises(BatchInputError, match="no requests"):
        split(source, tmp_path / "work")


def test_user_limits_narrow_the_service_limits() -> None:
    limits = ShardLimits.for_api_type("azure")
    assert limits.max_requests == 100_000
    assert limits.narrowed(max_requests=10).max_requests == 10
    with pytest.raises(ValueError, match="over the connection's limit"):
        ShardLimits().narrowed(max_requests=60_000)
    with pytest.raises(ValueError, match="positive integer"):
        ShardLimits().narrowed(max_bytes=0)
    assert ShardLimits.from_dict(limits.to_dict()) == limits


def test_bounded_lines_never_hold_an_over_long_line() -> None:
    data = b"ab\n" + b"x" * 10 + b"\n" + b"y" * 3_000_000 + b"\ncd"
    assert list(iter_bounded_lines(io.BytesIO(data), 5)) == [b"ab\n", 11, 3_000_001, b"cd"]
    assert list(iter_bounded_lines(io.BytesIO(b"z" * 9), 5)) == [9]
