"""The price table and the cost of a batch's usage (hand-calculated figures, no network)."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_openai_batch.models import Usage
from airflow_provider_openai_batch.pricing import (
    ModelPrice,
    PriceTable,
    PricingError,
    batch_cost,
    default_price_table,
)


def usage(inp: int, out: int, cached: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        input_tokens=inp, cached_tokens=cached, output_tokens=out, reasoning_tokens=reasoning, total_tokens=inp + out
    )


def test_shipped_table_has_a_date_a_source_and_batch_prices() -> None:
    table = default_price_table()
    assert table.as_of == "2025-08-15"
    assert table.source is not None and "openai.com" in table.source
    # Batch prices are half the standard ones: gpt-4o-mini's standard 0.15 / 0.60 per 1M tokens.
    found = table.lookup("gpt-4o-mini")
    assert found is not None
    assert (found[1].input, found[1].output) == (0.075, 0.30)
    for name, price in table.models.items():
        assert price.input > 0, name
        assert price.as_of == table.as_of and price.source == table.source
        assert price.max_output_tokens is not None, name


def test_cost_of_chat_usage_matches_a_hand_calculation() -> None:
    # gpt-4o-mini at batch prices: 0.075 input, 0.30 output per 1M tokens; no cached price -> cached at input.
    report = batch_cost("gpt-4o-mini", usage(2_000_000, 500_000, cached=400_000))
    assert report is not None
    assert report.cost_usd == pytest.approx(2_000_000 * 0.075 / 1e6 + 500_000 * 0.30 / 1e6)  # 0.15 + 0.15
    assert round(report.cost_usd or 0, 2) == 0.30
    assert report.priced_as == "gpt-4o-mini"


def test_cached_and_reasoning_tokens_are_priced_as_the_api_bills_them() -> None:
    # gpt-5 at batch prices: 0.625 input, 0.0625 cached input, 5.00 output. Cached tokens are part of
    # input_tokens; reasoning tokens are part of output_tokens (not billed twice).
    report = batch_cost("gpt-5", usage(1_000_000, 200_000, cached=600_000, reasoning=150_000))
    assert report is not None
    hand = 400_000 * 0.625 / 1e6 + 600_000 * 0.0625 / 1e6 + 200_000 * 5.00 / 1e6  # 0.25 + 0.0375 + 1.00
    assert report.cost_usd == pytest.approx(hand)
    assert report.to_dict()["reasoning_tokens"] == 150_000
    assert report.to_dict()["cached_input_tokens"] == 600_000


def test_embeddings_have_no_output_cost() -> None:
    report = batch_cost("text-embedding-3-small", usage(3_000_000, 0))
    assert report is not None
    assert report.cost_usd == pytest.approx(3_000_000 * 0.01 / 1e6)


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # its own, older price wins over the base entry
    ],
)
def test_dated_snapshots_map_to_their_base_entry(model: str, entry: str) -> None:
    found = default_price_table().lookup(model)
    assert found is not None and found[0] == entry


def test_dated_snapshot_with_its_own_price_is_not_priced_as_the_base() -> None:
    table = default_price_table()
    old, base = table.lookup("gpt-4o-2024-05-13"), table.lookup("gpt-4o")
    assert old is not None and base is not None
    assert old[1].input != base[1].input


@pytest.mark.parametrize(
    "model", ["ft:gpt-4o-mini-2024-07-18:org::abc", "my-azure-deployment", "gpt-4o-mini-fail", None]
)
def test_unknown_model_gets_no_cost_and_one_warning(model: str | None, caplog: pytest.LogCaptureFixture) -> None:
    table = default_price_table()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_openai_batch.pricing"):
        first = batch_cost(model, usage(1000, 10), table)
        second = batch_cost(model, usage(1000, 10), table)
    assert first is not None and second is not None
    assert first.cost_usd is None and first.note
    assert "cost unknown" in first.describe()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not in the price table" in warnings[0].getMessage()


def test_no_usage_reported_means_no_report() -> None:
    assert batch_cost("gpt-4o", None) is None


def test_overrides_add_and_replace_models_and_say_where_they_come_from() -> None:
    table = default_price_table().with_overrides(
        {"my-deployment": {"input": 1.0, "output": 2.0}, "gpt-4o-mini": {"input": 0.1, "output": 0.5}},
        origin="connection 'x' extra 'prices'",
    )
    mine = table.lookup("my-deployment")
    assert mine is not None and mine[1].source == "connection 'x' extra 'prices'"
    report = batch_cost("gpt-4o-mini", usage(1_000_000, 1_000_000), table)
    assert report is not None and report.cost_usd == pytest.approx(0.6)
    # The shipped table is not changed by an override.
    assert default_price_table().lookup("my-deployment") is None


def test_override_in_the_full_shape_with_its_own_date_and_from_json_text() -> None:
    text = json.dumps(
        {"as_of": "2026-01-01", "source": "our gateway", "models": {"m": {"input": 3, "output": 4, "cached_input": 1}}}
    )
    table = PriceTable.from_dict({"models": {}}).with_overrides(text, origin="operator argument 'prices'")
    found = table.lookup("m")
    assert found is not None
    assert found[1] == ModelPrice(input=3.0, output=4.0, cached_input=1.0, as_of="2026-01-01", source="our gateway")
    report = batch_cost("m", usage(1_000_000, 0, cached=500_000), table)
    assert report is not None and report.cost_usd == pytest.approx(0.5 * 3 + 0.5 * 1)
    assert report.to_dict()["prices_as_of"] == "2026-01-01"
    assert "our gateway" in report.describe()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"m": {"input": 1}}, "'output' must be a number"),
        ({"m": {"input": -1, "output": 1}}, "'input' must be a number >= 0"),
        ({"m": {"input": "1", "output": 1}}, "'input' must be a number"),
        ({"m": {"input": 1, "output": 1, "max_output_tokens": 1.5}}, "'max_output_tokens' must be an integer"),
        ({"m": {"input": 1, "output": 1, "inptu": 2}}, "unknown keys ['inptu']"),
        ({"m": 3}, "expected an object"),
        ("{not json", "not valid JSON"),
        ([1, 2], "expected an object of model -> prices"),
    ],
)
def test_malformed_overrides_are_named(overrides: object, needle: str) -> None:
    with pytest.raises(PricingError) as info:
        default_price_table().with_overrides(overrides, origin="operator argument 'prices'")
    assert needle in str(info.value)
    assert "operator argument 'prices'" in str(info.value)


def test_report_is_json_with_the_price_date_and_source() -> None:
    report = batch_cost("gpt-4o", usage(100, 10))
    assert report is not None
    data = json.loads(json.dumps(report.to_dict()))
    assert data["prices_as_of"] == "2025-08-15"
    assert data["prices_per_1m_tokens"] == {"input": 1.25, "cached_input": None, "output": 5.0}
    line = report.describe()
    assert "\n" not in line and "100 input tokens" in line and "2025-08-15" in line
