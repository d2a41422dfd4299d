"""The endpoint registry: its entries, what each reads from a body, and that the consumers follow a new entry."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import normalize_endpoint, validate_batch_input
from airflow_provider_openai_batch.endpoints import ENDPOINTS, Endpoint, TokenNote, count_items, endpoint_spec
from airflow_provider_openai_batch.exceptions import BatchInputError
from airflow_provider_openai_batch.job.limits import ShardLimits
from airflow_provider_openai_batch.job.split import split_input
from airflow_provider_openai_batch.pricing import default_price_table
from tests._kit.inputs import ENDPOINT_BODIES

EVERY_ENDPOINT = pytest.mark.parametrize("endpoint", list(ENDPOINTS))

#: One body that sets every field any endpoint reads: what each endpoint makes of it differs.
EVERYTHING = {
    "max_completion_tokens": 7,
    "max_tokens": 9,
    "max_output_tokens": 11,
    "n": 3,
    "best_of": 5,
    "prompt": ["a", "b", "c", "d"],
    "input": ["x", "y"],
}
#: endpoint -> (output limit, completions billed, per-batch inputs) of EVERYTHING.
READS = {
    "/v1/chat/completions": (7, 3, 0),
    "/v1/completions": (9, 4 * 5, 0),  # 4 prompts, each best_of=5 completions (n=3 of them returned)
    "/v1/responses": (11, 3, 0),
    "/v1/embeddings": (None, 1, 2),
}


def test_the_registry_holds_exactly_the_supported_endpoints_in_their_one_form() -> None:
    assert list(ENDPOINTS) == ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"]
    for path, entry in ENDPOINTS.items():
        assert entry.path == path == normalize_endpoint(path)
    # The tests' tables cover every entry: a new endpoint fails here until it has a body and expectations.
    assert set(ENDPOINT_BODIES) == set(READS) == set(ENDPOINTS)


@EVERY_ENDPOINT
def test_what_each_endpoint_reads_from_a_body(endpoint: str) -> None:
    spec = ENDPOINTS[endpoint]
    assert (spec.output_limit(EVERYTHING), spec.completions(EVERYTHING), spec.inputs(EVERYTHING)) == READS[endpoint]
    # Nothing set: no limit, one completion per request, one input where inputs are counted.
    assert (spec.output_limit({}), spec.completions({}), spec.inputs({})) == (None, 1, READS[endpoint][2] and 1)


def test_completions_bills_the_larger_of_n_and_best_of_for_each_prompt() -> None:
    spec = ENDPOINTS["/v1/completions"]
    assert spec.completions({"prompt": "one", "n": 2}) == 2
    assert spec.completions({"prompt": "one", "best_of": 3}) == 3
    assert spec.completions({"prompt": [[1, 2], [3], [4, 5]], "n": 2, "best_of": 4}) == 12  # three token arrays
    assert spec.completions({"prompt": [101, 102, 103], "n": 2}) == 2  # one token array
    assert spec.completions({"prompt": ["a", "b"], "n": 0, "best_of": True}) == 2  # not counts: 1 each


@EVERY_ENDPOINT
def test_a_zero_or_non_integer_limit_is_no_limit(endpoint: str) -> None:
    spec = ENDPOINTS[endpoint]
    for value in (0, -1, 1.5, "10", True, None):
        assert spec.output_limit(dict.fromkeys(spec.output_limits, value)) is None
    # The smallest limit is one: a one-token completion is bounded, not unlimited.
    assert spec.output_limit(dict.fromkeys(spec.output_limits, 1)) == (1 if spec.output_limits else None)


@EVERY_ENDPOINT
def test_entries_are_frozen(endpoint: str) -> None:
    # One registry for every consumer: an entry changed in place would change every later file's checks.
    with pytest.raises(dataclasses.FrozenInstanceError):
        ENDPOINTS[endpoint].prompts = "x"  # type: ignore[misc]
    for note in ENDPOINTS[endpoint].token_notes:
        with pytest.raises(dataclasses.FrozenInstanceError):
            note.code = "x"  # type: ignore[misc]


def test_a_token_note_applies_when_the_body_sets_each_of_its_fields() -> None:
    note = TokenNote("both", frozenset({"max_tokens", "max_completion_tokens"}), "keep one")
    assert note.applies({"max_tokens": 1, "max_completion_tokens": 1})  # exactly its fields
    assert note.applies({"model": "m", "max_tokens": 1, "max_completion_tokens": 1})
    assert not note.applies({"model": "m", "max_tokens": 1})


@pytest.mark.parametrize(
    ("value", "count"),
    [("one text", 1), (["a", "b", "c"], 3), ([1, 2, 3], 1), ([[1, 2], [3]], 2), ([], 1), (None, 1), ({"a": 1}, 1)],
    ids=["string", "strings", "token_array", "token_arrays", "empty", "missing", "object"],
)
def test_count_items(value: Any, count: int) -> None:
    assert count_items(value) == count


def test_an_unknown_or_unset_endpoint_has_no_entry() -> None:
    assert endpoint_spec("/v1/moderations") is None
    assert endpoint_spec(None) is None
    assert endpoint_spec("") is None
    assert endpoint_spec("/v1/embeddings") is ENDPOINTS["/v1/embeddings"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/chat/completions", "/v1/chat/completions"),
        ("chat/completions", "/v1/chat/completions"),
        ("v1/embeddings", "/v1/embeddings"),
        (" /v1/responses ", "/v1/responses"),
        ("/videos", "/v1/videos"),  # sorts after "/v1": only the prefix tells the forms apart
        ("/v1", "/v1"),
    ],
)
def test_normalize_endpoint(url: str, expected: str) -> None:
    assert normalize_endpoint(url) == expected


@pytest.mark.parametrize("bad", ["", "  ", None, 3])
def test_normalize_endpoint_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        normalize_endpoint(bad)


# -- adding an endpoint is adding an entry ----------------------------------------------------------------


MODERATIONS = "/v1/moderations"


def moderation(custom_id: str, texts: list[str]) -> bytes:
    body = {"model": "omni-moderation-latest", "input": texts}
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": MODERATIONS, "body": body}) + "\n").encode()


def test_the_checker_the_estimate_and_the_split_follow_a_new_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = moderation("a", ["x", "y", "z"]) + moderation("b", ["w"])
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    table = default_price_table().with_overrides({"omni-moderation-latest": {"input": 1, "output": 2}}, origin="t")
    # Unknown: checked by the common rules only, no estimate, no input count.
    before = validate_batch_input(path, endpoint=MODERATIONS, max_embedding_inputs=3, prices=table)
    assert before.estimate is not None and before.estimate.cost_usd is None and before.embedding_inputs == 0

    monkeypatch.setitem(ENDPOINTS, MODERATIONS, Endpoint(MODERATIONS, batch_inputs="input"))

    after = validate_batch_input(path, endpoint=MODERATIONS, prices=table)
    assert after.embedding_inputs == 4
    assert after.estimate is not None and (after.estimate.output_tokens, after.estimate.input_tokens) == (0, len(data))
    assert after.estimate.cost_usd == pytest.approx(len(data) / 1e6, abs=2e-6)
    with pytest.raises(BatchInputError, match="too_many_embedding_inputs"):
        validate_batch_input(path, endpoint=MODERATIONS, max_embedding_inputs=3)
    work = tmp_path / "work"
    work.mkdir()
    limits = ShardLimits(max_requests=sys.maxsize, max_bytes=10_000, max_embedding_inputs=3)
    split = split_input(io.BytesIO(data), work, endpoint=MODERATIONS, limits=limits, source="in.jsonl")
    assert [(s.requests, s.embedding_inputs) for s in split.plan.shards] == [(1, 3), (1, 1)]
