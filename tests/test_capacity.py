"""The enqueued limits a job budgets against: one number or a mapping per model, from an argument or an extra."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.capacity import EnqueuedLimit, EnqueuedLimits


@pytest.mark.parametrize(
    ("value", "default", "per_model"),
    [
        (None, None, ()),
        ("", None, ()),
        (2_000_000, 2_000_000, ()),
        ("2_000_000", 2_000_000, ()),
        (" 90000 ", 90_000, ()),
        (2e6, 2_000_000, ()),
        ({"gpt-4o-mini": 2_000_000, "gpt-4o": "90000"}, None, (("gpt-4o", 90_000), ("gpt-4o-mini", 2_000_000))),
        ('{"gpt-4o": 90000, "*": 500}', 500, (("gpt-4o", 90_000),)),
    ],
    ids=["none", "empty", "int", "text", "padded", "float", "mapping", "json_with_default"],
)
def test_parse(value: Any, default: int | None, per_model: tuple[tuple[str, int], ...]) -> None:
    assert EnqueuedLimit.parse(value, name="max_enqueued_tokens") == EnqueuedLimit(default, per_model)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "max_enqueued_tokens must be a positive integer, got 0"),
        (-5, "must be a positive integer"),
        (True, "must be a positive integer"),
        (1.5, "must be a positive integer"),
        ("lots", "must be a positive integer, got 'lots'"),
        ({}, "empty mapping"),
        ({"gpt-4o": 0}, r"max_enqueued_tokens\['gpt-4o'\] must be a positive integer"),
        ({"": 5}, "model names must be non-empty strings"),
        ("{not json", "not a valid JSON object"),
        ([5], "must be a positive integer"),
    ],
)
def test_bad_values_name_the_argument_and_the_value(value: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EnqueuedLimit.parse(value, name="max_enqueued_tokens")


def test_a_model_gets_its_own_limit_else_the_default_else_none() -> None:
    named = EnqueuedLimit.parse({"gpt-4o": 90_000, "gpt-4o-mini": 2_000_000}, name="x")
    assert (named.for_model("gpt-4o"), named.for_model("gpt-4o-mini"), named.for_model("o3")) == (
        90_000,
        2_000_000,
        None,
    )
    assert named.smallest == 90_000 and named.to_json() == {"gpt-4o": 90_000, "gpt-4o-mini": 2_000_000}
    star = EnqueuedLimit.parse({"gpt-4o": 90_000, "*": 40}, name="x")
    assert (star.for_model("o3"), star.for_model(None), star.smallest) == (40, 40, 40)
    assert star.to_json() == {"gpt-4o": 90_000, "*": 40}
    assert EnqueuedLimit(7).to_json() == 7 and EnqueuedLimit().smallest is None and not EnqueuedLimit().is_set
    hash(EnqueuedLimits(named, star))  # connection settings holding them are hashed (one client per settings)


def test_an_operator_limit_replaces_the_connection_one_each_on_its_own() -> None:
    connection = EnqueuedLimits(tokens=EnqueuedLimit(1000), requests=EnqueuedLimit(10))
    assert connection.overridden(tokens=EnqueuedLimit(per_model=(("m", 5),))) == EnqueuedLimits(
        EnqueuedLimit(per_model=(("m", 5),)), EnqueuedLimit(10)
    )
    assert connection.overridden(tokens=EnqueuedLimit(), requests=EnqueuedLimit(3)) == EnqueuedLimits(
        EnqueuedLimit(1000), EnqueuedLimit(3)
    )
    assert connection.to_dict() == {"max_enqueued_tokens": 1000, "max_enqueued_requests": 10}
    assert not EnqueuedLimits().is_set and EnqueuedLimits(requests=EnqueuedLimit(1)).is_set
