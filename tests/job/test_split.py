"""split_input: shards within limits, at line boundaries, one model each; every problem before any upload."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import io
import json
import random
import tracemalloc
import warnings
from pathlib import Path

import pytest

from airflow_provider_openai_batch.endpoints import ENDPOINTS
from airflow_provider_openai_batch.exceptions import BatchInputError
from airflow_provider_openai_batch.job.limits import MAX_EMBEDDING_INPUTS, ShardLimits
from airflow_provider_openai_batch.job.split import embedding_inputs, iter_bounded_lines, split_input
from tests._kit.inputs import endpoint_request
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


def split_problems(source: Path, workdir: Path, **kwargs: object) -> BatchInputError:
    workdir.mkdir(exist_ok=True)
    with source.open("rb") as stream, pytest.raises(BatchInputError) as info:
        split_input(stream, workdir, endpoint=CHAT, limits=ShardLimits(), source=str(source), **kwargs)  # type: ignore[arg-type]
    return info.value


class Trickle(io.BytesIO):
    """A stream that hands out at most ``step`` bytes a read, as a network stream may."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.step if size is None or size < 0 else min(size, self.step))


def expected_lines(data: bytes, max_line: int) -> list[bytes | int]:
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    return [line if len(line) <= max_line else len(line) for line in lines]


def test_bounded_lines_across_read_boundaries() -> None:
    rng = random.Random(7)
    for _ in range(300):
        data = b"".join(rng.choice([b"\n", b"a", b"bb", b"cccc\n", b"\n\n"]) for _ in range(rng.randrange(0, 12)))
        step, max_line = rng.randrange(1, 8), rng.randrange(1, 7)
        assert list(iter_bounded_lines(Trickle(data, step), max_line)) == expected_lines(data, max_line), (data, step)


@pytest.mark.parametrize("step", [1, 4, 1024])
def test_a_line_of_exactly_the_limit_is_kept(step: int) -> None:
    # The newline counts; a last line without one may be the limit long too.
    assert list(iter_bounded_lines(Trickle(b"abcd\nabcde\nabcde", step), 5)) == [b"abcd\n", 6, b"abcde"]
    assert list(iter_bounded_lines(Trickle(b"abcdef", step), 5)) == [6]


def test_text_streams_are_read_as_utf8_bytes() -> None:
    assert list(iter_bounded_lines(io.StringIO("é\n\udcff\n"), 10)) == ["é\n".encode(), b"\xff\n"]


def test_non_chat_requests_count_no_embedding_inputs(tmp_path: Path) -> None:
    chat = split(write_lines(tmp_path / "chat.jsonl", [request(i) for i in range(3)]), tmp_path / "w1")
    responses = [
        {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": ["a", "b"]}}
        for i in range(3)
    ]
    other = split(write_lines(tmp_path / "resp.jsonl", responses), tmp_path / "w2", endpoint="/v1/responses")
    assert [s.embedding_inputs for s in chat.plan.shards + other.plan.shards] == [0, 0]


def test_shards_fill_up_to_exactly_their_limits(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(i) for i in range(10, 16)])  # lines of equal length
    size = len(source.read_bytes()) // 6
    by_bytes = split(source, tmp_path / "w1", max_bytes=2 * size)
    assert [s.requests for s in by_bytes.plan.shards] == [2, 2, 2]
    lines = [
        {"custom_id": f"e-{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": ["a", "b"]}}
        for i in range(5)
    ]
    embeddings = write_lines(tmp_path / "emb.jsonl", lines)
    by_inputs = split(embeddings, tmp_path / "w2", endpoint="/v1/embeddings", max_embedding_inputs=4)
    assert [s.embedding_inputs for s in by_inputs.plan.shards] == [4, 4, 2]
    # One request may hold as many inputs as one shard.
    alone = split(
        write_lines(tmp_path / "one.jsonl", lines[:1]), tmp_path / "w3", "/v1/embeddings", max_embedding_inputs=2
    )
    assert [s.embedding_inputs for s in alone.plan.shards] == [2]


def test_at_most_32_shards_are_open_and_the_least_recently_used_is_closed(tmp_path: Path) -> None:
    models = [f"m{i}" for i in range(33)] + ["m1", "m0"]
    source = write_lines(tmp_path / "in.jsonl", [request(i, model=m) for i, m in enumerate(models)])
    result = split(source, tmp_path / "work")
    # m0 was closed to open m32, so its second request starts shard 33; m1 was still open.
    assert [(s.model, s.requests) for s in result.plan.shards][:2] == [("m0", 1), ("m1", 2)]
    assert [(s.index, s.model, s.first_line) for s in result.plan.shards][-1] == (33, "m0", 35)
    assert len(result.plan.shards) == 34


#: endpoint -> (requests, embedding inputs) of each shard of three requests with 3 inputs each, 4 inputs a shard.
SHARDS_BY_ENDPOINT = {
    "/v1/chat/completions": [(3, 0)],
    "/v1/completions": [(3, 0)],  # a prompt list is several completions, not inputs held per batch
    "/v1/responses": [(3, 0)],
    "/v1/embeddings": [(1, 3), (1, 3), (1, 3)],
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_counts_inputs_per_shard_as_its_registry_entry_says(tmp_path: Path, endpoint: str) -> None:
    lines = [endpoint_request(f"r-{i}", endpoint, input=["a", "b", "c"], prompt=["a", "b", "c"]) for i in range(3)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    result = split(source, tmp_path / "work", endpoint=endpoint, max_embedding_inputs=4)
    assert [(s.requests, s.embedding_inputs) for s in result.plan.shards] == SHARDS_BY_ENDPOINT[endpoint]


def test_an_endpoint_the_registry_does_not_know_counts_no_inputs(tmp_path: Path) -> None:
    lines = [{**request(i), "url": "/v1/moderations"} for i in range(2)]
    for line in lines:
        line["body"]["input"] = ["a", "b"]
    result = split(write_lines(tmp_path / "in.jsonl", lines), tmp_path / "work", endpoint="/v1/moderations")
    assert [(s.requests, s.embedding_inputs) for s in result.plan.shards] == [(2, 0)]


def test_a_body_that_is_not_an_object_is_a_problem_not_a_count(tmp_path: Path) -> None:
    lines = [endpoint_request("e-0", "/v1/embeddings"), {**endpoint_request("e-1", "/v1/embeddings"), "body": ["x"]}]
    (tmp_path / "work").mkdir()
    with write_lines(tmp_path / "in.jsonl", lines).open("rb") as stream, pytest.raises(BatchInputError) as info:
        split_input(stream, tmp_path / "work", endpoint="/v1/embeddings", limits=ShardLimits(), source="in")
    assert [(p.line, p.code) for p in info.value.problems] == [(2, "missing_body")]


def test_a_last_line_without_its_newline_never_takes_a_shard_over_the_byte_limit(tmp_path: Path) -> None:
    first = json.dumps(request(0)).encode() + b"\n"
    last = json.dumps(request(1, pad=40)).encode()  # the input ends without a newline
    source = tmp_path / "in.jsonl"
    source.write_bytes(first + last)
    limit = len(last)  # the last line alone is the limit; with the newline its shard needs, one byte over

    with pytest.raises(BatchInputError) as info:
        split(source, tmp_path / "w1", max_bytes=limit)

    assert [(p.line, p.code, p.message) for p in info.value.problems] == [
        (
            2,
            "request_too_large",
            f"the line is over {limit:,} bytes with the newline a shard line needs, more than one batch file may hold",
        )
    ]
    assert not list((tmp_path / "w1").glob("shard-*"))
    # One byte more: the line and its newline fill a shard exactly.
    result = split(source, tmp_path / "w2", max_bytes=limit + 1)
    assert [s.bytes for s in result.plan.shards] == [len(first), limit + 1]
    assert [p.read_bytes() for p in result.paths] == [first, last + b"\n"]


def test_a_line_too_large_alone_is_the_only_problem(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request(0, pad=5000)])
    with source.open("rb") as stream, pytest.raises(BatchInputError) as info:
        (tmp_path / "w").mkdir()
        split_input(stream, tmp_path / "w", endpoint=CHAT, limits=ShardLimits(max_bytes=1000), source="in")
    assert [(p.line, p.code, p.message) for p in info.value.problems] == [
        (1, "request_too_large", "the line is over 1,000 bytes, more than one batch file may hold")
    ]


def test_ids_that_are_not_strings_are_not_indexed_as_duplicates(tmp_path: Path) -> None:
    lines = [{**request(0), "custom_id": 5}, {**request(1), "custom_id": 5}]
    error = split_problems(write_lines(tmp_path / "in.jsonl", lines), tmp_path / "work")
    assert [(p.line, p.code) for p in error.problems] == [(1, "missing_custom_id"), (2, "missing_custom_id")]


@pytest.mark.parametrize(("length", "shown"), [(60, "'" + "d" * 60 + "'"), (61, "'" + "d" * 57 + "...'")])
def test_long_duplicate_ids_are_cut_in_the_message(tmp_path: Path, length: int, shown: str) -> None:
    lines = [request(0), request(1), request(2)]
    lines[0]["custom_id"] = lines[2]["custom_id"] = "d" * length
    error = split_problems(write_lines(tmp_path / "in.jsonl", lines), tmp_path / "work")
    assert [(p.line, p.message) for p in error.problems] == [(3, f"duplicate custom_id {shown} (first seen on line 1)")]


def test_problems_are_sorted_with_file_problems_first(tmp_path: Path) -> None:
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n\n")
    error = split_problems(blank, tmp_path / "w1")
    assert [(p.line, p.code) for p in error.problems] == [(None, "empty_file"), (1, "empty_line"), (2, "empty_line")]
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(request(0)) + "\n" + json.dumps(request(0)) + "\n{broken\n")
    later = split_problems(source, tmp_path / "w2")
    assert [(p.line, p.code) for p in later.problems] == [(2, "duplicate_custom_id"), (3, "invalid_json")]
    assert later.problems[0].message == "duplicate custom_id 'req-0' (first seen on line 1)"


def test_problems_stop_at_100_by_default_or_at_max_problems(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"{broken\n" * 101)
    error = split_problems(source, tmp_path / "w1")
    assert (len(error.problems), error.truncated) == (100, True)
    few = split_problems(source, tmp_path / "w2", max_problems=2)
    assert ([p.line for p in few.problems], few.truncated) == ([1, 2], True)


def test_a_failed_split_closes_its_shard_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    lines = [request(i, model=f"m{i % 3}") for i in range(9)] + [{**request(9), "url": "/v1/embeddings"}]
    source = write_lines(tmp_path / "in.jsonl", lines)
    gc.collect()  # other tests' garbage warns now, not below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # an unclosed file warns when it is collected
        split_problems(source, work)
        gc.collect()
    assert [str(w.message) for w in caught if str(work) in str(w.message)] == []
    assert not list(work.glob("shard-*"))


def test_the_split_is_immutable(tmp_path: Path) -> None:
    result = split(write_lines(tmp_path / "in.jsonl", [request(0)]), tmp_path / "work")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.paths = ()  # type: ignore[misc]


class Endless:
    """A stream of one line that never ends, made up as it is read (nothing of it exists beforehand)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int) -> bytes:
        step = min(size, self.left)
        self.left -= step
        return b"x" * step


def test_an_over_long_line_is_never_held() -> None:
    tracemalloc.start()
    try:
        lines = list(iter_bounded_lines(Endless(32 * 1024 * 1024), 1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [32 * 1024 * 1024]
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"  # a few read chunks, not the line
