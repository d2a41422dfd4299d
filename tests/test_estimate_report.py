"""What the estimate reports besides the bound of one request: media it cannot bound, several models, the
sums priced and rounded, the words of ``drivers``, and the ``max_cost_usd`` edge (estimate.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from airflow_provider_openai_batch.estimate import (
    CostEstimate,
    CostEstimator,
    RequestBound,
    _round_up,
    bound_request,
    budget_problem,
)
from airflow_provider_openai_batch.pricing import PriceTable, default_price_table

CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
MEDIA_TYPES = ["image_url", "input_image", "input_audio", "input_file", "file", "image", "audio"]


def media(endpoint: str, items: list[Any]) -> bool:
    field = "messages" if endpoint == CHAT else "input"
    bound = bound_request(endpoint, {"model": "m", field: items}, b"x")
    assert bound is not None
    return bound.media


# -- media whose tokens the bytes do not bound -----------------------------------------------------------------


@pytest.mark.parametrize("kind", MEDIA_TYPES)
def test_every_media_part_type_is_flagged_in_content_and_as_an_item(kind: str) -> None:
    # Something that is not a dict comes first: the search goes on past it.
    assert media(CHAT, ["stray", {"role": "user", "content": ["text", {"type": kind}]}])
    assert media(RESPONSES, [{"role": "user", "content": "hi"}, {"type": kind, "file_id": "f"}])


def test_text_is_not_media() -> None:
    assert not media(CHAT, [{"role": "user", "content": [{"type": "text", "text": "image_url"}]}])
    assert not media(RESPONSES, [{"role": "user"}, {"type": "message", "content": None}])
    assert not media(RESPONSES, [{"type": "input_image", "content": "an item whose content is text"}])
    assert not media(CHAT, "image_url")  # not a list of items


def test_requests_with_media_are_counted_once_each() -> None:
    estimator = CostEstimator()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    for _ in range(2):
        estimator.add(CHAT, body, b"x" * 10)
    estimate = estimator.result(CHAT)
    assert estimate.requests_with_media == 2
    assert budget_problem(estimate, 100.0) is not None  # a cap cannot hold over unbounded tokens


# -- the records --------------------------------------------------------------------------------------------------


def test_a_request_bound_defaults_to_one_completion_without_media() -> None:
    assert RequestBound(5, None) == RequestBound(5, None, 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RequestBound(5, None).choices = 2  # type: ignore[misc]


def test_an_estimate_survives_xcom_with_every_field() -> None:
    estimate = CostEstimate(
        model="m", endpoint=CHAT, requests=3, input_tokens=10, output_tokens=None, requests_without_limit=1,
        requests_with_media=2, cost_usd=None, note="why not",
    )  # fmt: skip
    assert CostEstimate.from_dict(json.loads(json.dumps(estimate.to_dict()))) == estimate
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.note = "x"  # type: ignore[misc]


PRICED = CostEstimate(
    model="m", endpoint=CHAT, requests=2, input_tokens=1_000, output_tokens=None, requests_without_limit=0,
    requests_with_media=0, cost_usd=0.5, input_cost_usd=0.25, output_cost_usd=0.25,
)  # fmt: skip


def test_drivers_name_the_input_and_output_shares() -> None:
    assert PRICED.drivers() == "input $0.25 for <= 1,000 tokens; output $0.25 for <= 0 tokens"


@pytest.mark.parametrize("missing", ["cost_usd", "input_cost_usd", "output_cost_usd"])
def test_drivers_leave_the_shares_out_when_one_is_unknown(missing: str) -> None:
    assert dataclasses.replace(PRICED, **{missing: None}).drivers() == ""


# -- the sums priced --------------------------------------------------------------------------------------------


def test_nothing_added_costs_nothing() -> None:
    assert CostEstimator().result(CHAT) == CostEstimate(
        model=None, endpoint=CHAT, requests=0, input_tokens=0, output_tokens=0, requests_without_limit=0,
        requests_with_media=0, cost_usd=0.0, input_cost_usd=0.0, output_cost_usd=0.0,
    )  # fmt: skip


def test_no_endpoint_is_named_as_unknown() -> None:
    estimator = CostEstimator()
    estimator.add(None, {"model": "gpt-4o-mini"}, b"x")
    assert estimator.result(None).note == (
        "no estimate for endpoint unknown (only /v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings)"
    )


def chat(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [], **fields}


def test_models_are_priced_in_name_order_whatever_their_sums() -> None:
    estimator = CostEstimator()
    for body in (chat("gpt-4o-mini", max_tokens=1), chat("gpt-4o", max_tokens=1), chat("gpt-4o", max_tokens=1)):
        estimator.add(CHAT, body, b"x")
    assert estimator.result(CHAT).priced_as == "gpt-4o, gpt-4o-mini"


def test_an_unpriced_model_does_not_stop_the_others_being_counted() -> None:
    table = default_price_table().with_overrides({"a-custom": {"input": 1, "output": 2}}, origin="test")
    estimator = CostEstimator()
    estimator.add(CHAT, chat("a-unknown", max_tokens=5), b"x")  # sorts first: not in the table
    estimator.add(CHAT, chat("gpt-4o-mini", max_tokens=10), b"x")
    assert estimator.result(CHAT, table).output_tokens == 15
    estimator.add(CHAT, chat("a-custom"), b"x")  # no limit, and no largest completion in the table
    estimator.add(CHAT, chat("zz-unknown", max_tokens=1), b"x")
    result = estimator.result(CHAT, table)
    assert (result.output_tokens, result.cost_usd) == (None, None)
    assert result.note == (  # in name order, every model named: a-custom sorts before a-unknown
        "requests without a completion-token limit, and no max_output_tokens for 'a-custom' in the table; "
        "model 'a-unknown' is not in the price table; model 'zz-unknown' is not in the price table"
    )


def test_large_sums_are_priced_per_million_exactly() -> None:
    # $1,000 / $3,000 per 1M tokens: a divisor off by one would move each share by 2-3 micro-dollars, past the
    # rounding up. A table without a date or a source says so.
    table = PriceTable.from_dict({"models": {"dear": {"input": 1000, "output": 3000}}})
    estimator = CostEstimator()
    estimator.add(CHAT, chat("dear", max_tokens=1000), b"x" * 2000)
    result = estimator.result(CHAT, table)
    assert (result.input_cost_usd, result.output_cost_usd, result.cost_usd) == (2.0, 3.0, 5.0)
    assert (result.prices_as_of, result.prices_source) == ("unknown", "unknown")
    mine = default_price_table().with_overrides({"dear": {"input": 1000, "output": 3000}}, origin="mine")
    assert estimator.result(CHAT, mine).prices_source == "mine"


@pytest.mark.parametrize(
    ("usd", "rounded"),
    [(0.000127, 0.000127), (0.0001270004, 0.000127), (0.000127004, 0.000128), (0.0001270001, 0.000127),
     (1.2345671, 1.234568)],
)  # fmt: skip
def test_costs_round_up_to_the_micro_dollar_past_float_noise(usd: float, rounded: float) -> None:
    # Below a thousandth of a micro-dollar is float noise (0.1 + 0.2), not a cost to round up.
    assert _round_up(usd) == rounded


def test_a_cost_equal_to_the_cap_may_start() -> None:
    assert budget_problem(PRICED, 0.5) is None
    assert budget_problem(PRICED, 0.499999) is not None
