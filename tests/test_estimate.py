"""The pre-flight cost estimate: per-request bounds, pricing of the sums, and, against the emulator, that
the estimate bounds the actual cost and that the actual cost matches a hand calculation to the cent."""

from __future__ import annotations

import io
import json
import math
import time
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.endpoints import ENDPOINTS
from airflow_provider_openai_batch.estimate import CostEstimate, CostEstimator, bound_request, budget_problem
from airflow_provider_openai_batch.models import Batch
from airflow_provider_openai_batch.pricing import PriceTable, batch_cost, default_price_table
from tests._kit.inputs import endpoint_line

CHAT, RESPONSES, EMBEDDINGS = "/v1/chat/completions", "/v1/responses", "/v1/embeddings"
COMPLETIONS = "/v1/completions"


def line(custom_id: str, url: str, body: dict[str, Any]) -> bytes:
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) + "\n").encode()


def estimate_of(data: bytes, endpoint: str, table: PriceTable | None = None) -> CostEstimate:
    estimator = CostEstimator()
    for raw in data.splitlines(keepends=True):
        estimator.add(endpoint, json.loads(raw)["body"], raw)
    return estimator.result(endpoint, table)


# -- per-request bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "output", "choices"),
    [
        (CHAT, {"model": "m", "messages": [], "max_completion_tokens": 50, "max_tokens": 999}, 50, 1),
        (CHAT, {"model": "m", "messages": [], "max_tokens": 70, "n": 3}, 70, 3),
        (CHAT, {"model": "m", "messages": []}, None, 1),
        (CHAT, {"model": "m", "messages": [], "max_tokens": 0}, None, 1),  # not a limit: the API rejects it
        (RESPONSES, {"model": "m", "input": "hi", "max_output_tokens": 40}, 40, 1),
        (RESPONSES, {"model": "m", "input": "hi", "max_tokens": 40}, None, 1),  # not a responses field
        ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 16, "n": 2, "best_of": 5}, 16, 5),
        ("/v1/completions", {"model": "m", "prompt": ["x", "y", "z"], "max_tokens": 16, "n": 2}, 16, 6),
        (EMBEDDINGS, {"model": "m", "input": ["a", "b"]}, 0, 1),
    ],
)
def test_output_bound_comes_from_the_request_limit(
    endpoint: str, body: dict[str, Any], output: int | None, choices: int
) -> None:
    bound = bound_request(endpoint, body, b"x" * 123)
    assert bound is not None
    assert (bound.input_tokens, bound.output_tokens, bound.choices) == (123, output, choices)


def test_images_and_files_are_flagged_as_unbounded() -> None:
    parts = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]

    def bound(endpoint: str, body: dict[str, Any]) -> Any:
        return bound_request(endpoint, body, json.dumps(body).encode())

    chat = bound(CHAT, {"model": "m", "messages": [{"role": "user", "content": parts}]})
    responses = bound(
        RESPONSES, {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}
    )
    text = bound(CHAT, {"model": "m", "messages": [{"role": "user", "content": "image_url"}]})
    assert chat is not None and chat.media
    assert responses is not None and responses.media
    assert text is not None and not text.media


# -- completions billed: prompts, n, best_of (#22 item 3) -------------------------------------------------------

#: gpt-3.5-turbo-instruct at batch prices (half of 1.50 / 2.00 per 1M): the completions endpoint's model.
INSTRUCT = "gpt-3.5-turbo-instruct"
INSTRUCT_PRICES = default_price_table().with_overrides(
    {INSTRUCT: {"input": 0.75, "output": 1.00, "max_output_tokens": 4096}}, origin="test"
)
FOUR = ["Say one.", "Say two.", "Say three.", "Say four."]


@pytest.mark.parametrize(
    ("fields", "output", "cost_usd"),
    [
        # (bytes x 0.75 + output x 1.00) / 1M, rounded up to the micro-dollar.
        ({"prompt": "Say one.", "max_tokens": 16}, 16, 0.000127),  # 148 bytes
        ({"prompt": FOUR, "max_tokens": 16}, 64, 0.000206),  # 189 bytes; was bounded as 16 tokens, $0.000158
        ({"prompt": [[9906, 13], [17], [18], [19, 20]], "max_tokens": 16}, 64, 0.000193),  # four token arrays
        ({"prompt": [9906, 13, 17], "max_tokens": 16}, 16, 0.00013),  # one token array: one prompt
        ({"prompt": FOUR, "max_tokens": 16, "n": 2}, 128, 0.000276),  # 4 prompts x 2 choices
        ({"prompt": FOUR, "max_tokens": 16, "n": 2, "best_of": 3}, 192, 0.000351),  # best_of: 3 generated each
        ({"prompt": FOUR}, 4 * 4096, 0.016513),  # no limit: the model's largest completion, per prompt
    ],
    ids=["one", "four", "token_arrays", "one_token_array", "n", "best_of", "no_limit"],
)
def test_a_completions_prompt_list_is_bounded_per_prompt_and_completion(
    fields: dict[str, Any], output: int, cost_usd: float
) -> None:
    data = line("a", COMPLETIONS, {"model": INSTRUCT, **fields})
    result = estimate_of(data, COMPLETIONS, INSTRUCT_PRICES)
    assert (result.input_tokens, result.output_tokens) == (len(data), output)
    assert result.cost_usd == cost_usd


def test_a_cap_that_one_prompt_fits_stops_a_line_of_four() -> None:
    # gpt-4o: 1.25 input, 5.00 output per 1M. One 1,000-token completion fits $0.01, four of them do not
    # (the four-prompt line was bounded as one completion, $0.005219, and passed the cap).
    one = estimate_of(line("a", COMPLETIONS, {"model": "gpt-4o", "prompt": FOUR[0], "max_tokens": 1000}), COMPLETIONS)
    four = estimate_of(line("a", COMPLETIONS, {"model": "gpt-4o", "prompt": FOUR, "max_tokens": 1000}), COMPLETIONS)
    assert (one.output_tokens, one.cost_usd) == (1000, 0.005168)  # 134 bytes
    assert (four.output_tokens, four.cost_usd) == (4000, 0.020219)  # 175 bytes
    assert budget_problem(one, 0.01) is None
    problem = budget_problem(four, 0.01)
    assert problem is not None and "at most $0.02 " in problem and "exceeds max_cost_usd=$0.01" in problem


def test_n_on_chat_completions_multiplies_the_output() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100}
    data = line("a", CHAT, {**body, "n": 3}) + line("b", CHAT, body)
    result = estimate_of(data, CHAT)
    # 0.075 input, 0.30 output per 1M: (370 x 0.075 + (300 + 100) x 0.30) / 1M, rounded up to the micro-dollar.
    assert (result.input_tokens, result.output_tokens, result.cost_usd) == (370, 400, 0.000148)


#: endpoint -> output tokens of one line setting every limit and count any endpoint reads (see test_endpoints).
OUTPUT_OF_EVERYTHING = {CHAT: 7 * 3, COMPLETIONS: 9 * 4 * 5, RESPONSES: 11 * 3, EMBEDDINGS: 0}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_is_bounded_as_its_registry_entry_reads_the_body(endpoint: str) -> None:
    fields = {"max_completion_tokens": 7, "max_tokens": 9, "max_output_tokens": 11, "n": 3, "best_of": 5}
    if endpoint == COMPLETIONS:
        fields["prompt"] = FOUR
    data = endpoint_line("a", endpoint, model="gpt-4o-mini", **fields)
    result = estimate_of(data, endpoint)
    assert (result.input_tokens, result.output_tokens) == (len(data), OUTPUT_OF_EVERYTHING[endpoint])
    assert result.cost_usd is not None and result.note is None


def test_unsupported_endpoint_has_no_estimate() -> None:
    estimator = CostEstimator()
    estimator.add("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat"}, b"x" * 50)
    result = estimator.result("/v1/images/generations")
    assert result.cost_usd is None and result.note is not None and "/v1/images/generations" in result.note


# -- pricing the sums -----------------------------------------------------------------------------


def test_estimate_prices_the_bounds_by_hand() -> None:
    data = b"".join(
        line(
            f"r{i}",
            CHAT,
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 100}], "max_tokens": 200},
        )
        for i in range(10)
    )
    result = estimate_of(data, CHAT)
    # 10 lines of len(line) bytes each bound the input; 10 x 200 tokens bound the output (0.075 / 0.30 per 1M).
    assert result.input_tokens == len(data)
    assert result.output_tokens == 2000
    assert result.cost_usd == pytest.approx(len(data) * 0.075 / 1e6 + 2000 * 0.30 / 1e6, abs=2e-6)
    assert result.cost_usd >= len(data) * 0.075 / 1e6 + 2000 * 0.30 / 1e6  # rounded up, never down
    assert result.requests_without_limit == 0
    assert result.prices_as_of == "2025-08-15"


def test_requests_without_a_limit_use_the_models_largest_completion_and_say_so() -> None:
    data = line("a", CHAT, {"model": "gpt-4o-mini", "messages": [], "n": 2}) + line(
        "b", CHAT, {"model": "gpt-4o-mini", "messages": [], "max_tokens": 10}
    )
    result = estimate_of(data, CHAT)
    assert result.output_tokens == 2 * 16_384 + 10
    assert result.requests_without_limit == 1
    assert "1 of 2 requests set no completion-token limit" in result.describe()
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert CostEstimate.from_dict(result.to_dict()) == result


def test_unknown_model_gets_no_estimate_but_its_tokens() -> None:
    data = line("a", CHAT, {"model": "my-deployment", "messages": [], "max_tokens": 5})
    result = estimate_of(data, CHAT)
    assert result.cost_usd is None
    assert result.input_tokens == len(data) and result.output_tokens == 5
    assert "not in the price table" in result.describe()


def test_override_prices_the_estimate() -> None:
    table = default_price_table().with_overrides({"my-deployment": {"input": 1, "output": 2}}, origin="test")
    data = line("a", CHAT, {"model": "my-deployment", "messages": [], "max_tokens": 1000})
    result = estimate_of(data, CHAT, table)
    assert result.cost_usd == pytest.approx(len(data) * 1 / 1e6 + 1000 * 2 / 1e6, abs=2e-6)


def test_model_without_a_largest_completion_cannot_bound_unlimited_requests() -> None:
    table = default_price_table().with_overrides({"m": {"input": 1, "output": 2}}, origin="test")
    result = estimate_of(line("a", CHAT, {"model": "m", "messages": []}), CHAT, table)
    assert result.cost_usd is None and result.output_tokens is None
    assert result.note is not None and "max_output_tokens" in result.note


# -- against the emulator: actual usage of known size ---------------------------------------------


def run_batch(emulator: EmulatorServer, data: bytes, endpoint: str) -> Batch:
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

    hook = OpenAIBatchHook("openai_default")
    uploaded = hook.upload_file(io.BytesIO(data), filename="input.jsonl")
    batch = hook.create_batch(input_file_id=uploaded.id, endpoint=endpoint)
    deadline = time.monotonic() + 60
    while not batch.status.is_terminal:
        assert time.monotonic() < deadline, f"batch {batch.id} still {batch.status.value}"
        time.sleep(0.05)
        batch = hook.retrieve_batch(batch.id)
    assert batch.status.value == "completed" and batch.request_counts.failed == 0
    return batch


def tokens(text: str) -> int:
    """The emulator's token count (see airflow_provider_openai_batch/emulator/results.py)."""
    return max(1, math.ceil(len(text) / 4))


N, PROMPT_CHARS = 100, 40_000  # 100 requests of 10,000 input tokens each: 1M input tokens
# The emulator answers "echo:<12 hex> <first 64 chars of the prompt>": 82 chars, 21 tokens.
ECHO_TOKENS = tokens("echo:" + "0" * 12 + " " + "x" * 64)


def prompt(i: int) -> str:
    return (f"request {i:04d} " + "lorem ipsum dolor sit amet " * 2000)[:PROMPT_CHARS]


@pytest.mark.parametrize(
    ("endpoint", "model", "body", "hand_usd", "limit"),
    [
        # 1,000,000 input tokens x 1.25 + 100 x 21 output tokens x 5.00, per 1M tokens (gpt-4o batch prices)
        (
            CHAT,
            "gpt-4o",
            lambda i: {"messages": [{"role": "user", "content": prompt(i)}], "max_tokens": 64},
            1.2605,
            64,
        ),
        # gpt-5-mini: 0.125 input, 1.00 output: 0.125 + 0.0021
        (RESPONSES, "gpt-5-mini", lambda i: {"input": prompt(i), "max_output_tokens": 32}, 0.1271, 32),
        # text-embedding-3-large: 0.065 input, no output
        (EMBEDDINGS, "text-embedding-3-large", lambda i: {"input": prompt(i)}, 0.065, 0),
    ],
    ids=["chat", "responses", "embeddings"],
)
def test_cost_matches_a_hand_calculation_and_the_estimate_bounds_it(
    openai_conn: EmulatorServer, endpoint: str, model: str, body: Any, hand_usd: float, limit: int
) -> None:
    data = b"".join(line(f"r{i}", endpoint, {"model": model, **body(i)}) for i in range(N))
    batch = run_batch(openai_conn, data, endpoint)

    assert batch.usage is not None
    out_tokens = 0 if endpoint == EMBEDDINGS else N * ECHO_TOKENS
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (N * tokens(prompt(0)), out_tokens)
    report = batch_cost(batch.model, batch.usage)
    assert report is not None and report.cost_usd is not None
    assert round(report.cost_usd, 2) == round(hand_usd, 2)
    assert report.cost_usd == pytest.approx(hand_usd, abs=1e-9)

    estimate = estimate_of(data, endpoint)
    assert estimate.cost_usd is not None
    assert estimate.cost_usd >= report.cost_usd
    assert estimate.input_tokens >= batch.usage.input_tokens
    assert estimate.output_tokens == N * limit >= batch.usage.output_tokens
    # Long English-like prompts: about 4 bytes per token, so the bound is about 4x (stated in docs/cost.md).
    assert estimate.cost_usd <= 4.1 * report.cost_usd


def example_inputs() -> dict[str, tuple[bytes, str]]:
    """The inputs the example DAGs write, as they write them (gpt-4o-mini, text-embedding-3-small)."""
    from airflow_provider_openai_batch.batch_input import (
        build_chat_requests,
        build_embedding_requests,
        write_batch_input,
    )
    from example_dags import (
        openai_batch_chat,
        openai_batch_embeddings,
        openai_batch_mapped,
        openai_batch_wait_in_create,
    )

    def written(requests: Any, endpoint: str) -> tuple[bytes, str]:
        buffer = io.BytesIO()
        write_batch_input(requests, buffer, endpoint=endpoint)
        return buffer.getvalue(), endpoint

    questions = {f"q-{i}": q for i, q in enumerate(openai_batch_wait_in_create.QUESTIONS)}
    return {
        "chat": written(
            build_chat_requests(
                openai_batch_chat.PROMPTS, model="gpt-4o-mini", system="You are concise.", max_tokens=100
            ),
            CHAT,
        ),
        "embeddings": written(
            build_embedding_requests(openai_batch_embeddings.DOCUMENTS, model="text-embedding-3-small"), EMBEDDINGS
        ),
        "mapped": written(build_chat_requests(openai_batch_mapped.PROMPTS, model="gpt-4o-mini"), CHAT),
        "wait_in_create": written(build_chat_requests(questions, model="gpt-4o-mini"), CHAT),
    }


# Measured estimate / actual factors on the examples (docs/cost.md, "Pre-flight estimate"): 8.8x and 12.3x with a
# limit or no output (short texts: the JSON around them dominates each line); about 730x and 1,060x without
# a completion-token limit (16,384 tokens bound each request).
STATED_FACTORS = {"chat": 10, "embeddings": 15, "mapped": 1_000, "wait_in_create": 1_200}


def test_estimate_on_the_example_inputs_is_an_upper_bound_within_the_stated_factor(
    openai_conn: EmulatorServer,
) -> None:
    for name, (data, endpoint) in example_inputs().items():
        batch = run_batch(openai_conn, data, endpoint)
        report = batch_cost(batch.model, batch.usage)
        estimate = estimate_of(data, endpoint)
        assert report is not None and report.cost_usd and estimate.cost_usd is not None, name
        factor = estimate.cost_usd / report.cost_usd
        assert 1 <= factor <= STATED_FACTORS[name], (name, factor)


# -- in the validating pass -----------------------------------------------------------------------


def test_validate_batch_input_returns_the_estimate_of_the_same_pass(tmp_path: Any) -> None:
    from airflow_provider_openai_batch.batch_input import InputSummary, validate_batch_input

    data = b"".join(
        line(f"r{i}", CHAT, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
        for i in range(5)
    )
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)

    summary = validate_batch_input(path, endpoint="/chat/completions")

    assert summary.estimate == estimate_of(data, CHAT)
    assert summary.estimate is not None and summary.estimate.output_tokens == 45
    again = InputSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert again.estimate == summary.estimate


def test_validate_batch_input_prices_the_estimate_with_the_given_table(tmp_path: Any) -> None:
    from airflow_provider_openai_batch.batch_input import validate_batch_input

    data = line("a", CHAT, {"model": "deployment-1", "messages": [], "max_tokens": 1000})
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    table = default_price_table().with_overrides({"deployment-1": {"input": 2, "output": 4}}, origin="test")

    summary = validate_batch_input(path, prices=table)

    assert summary.estimate is not None
    assert summary.estimate.cost_usd == pytest.approx((len(data) * 2 + 1000 * 4) / 1e6, abs=2e-6)


def test_write_batch_input_returns_an_estimate_too(tmp_path: Any) -> None:
    from airflow_provider_openai_batch.batch_input import build_embedding_requests, write_batch_input

    summary = write_batch_input(
        build_embedding_requests({"a": "one", "b": "two"}, model="text-embedding-3-small"),
        tmp_path / "e.jsonl",
        endpoint=EMBEDDINGS,
    )
    assert summary.estimate is not None
    assert summary.estimate.output_tokens == 0
    assert summary.estimate.input_tokens == (tmp_path / "e.jsonl").stat().st_size


def test_several_models_are_priced_each_at_its_own_price() -> None:
    data = line("a", CHAT, {"model": "gpt-4o", "messages": [], "max_tokens": 100}) + line(
        "b", CHAT, {"model": "gpt-4o-mini", "messages": [], "max_tokens": 100}
    )
    first, second = data.splitlines(keepends=True)
    result = estimate_of(data, CHAT)
    hand = (len(first) * 1.25 + 100 * 5.0 + len(second) * 0.075 + 100 * 0.30) / 1e6
    assert result.cost_usd == pytest.approx(hand, abs=2e-6)
    assert result.priced_as == "gpt-4o, gpt-4o-mini"
