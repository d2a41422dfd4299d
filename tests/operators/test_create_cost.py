"""The create operator's pre-flight estimate, ``max_cost_usd`` and ``dry_run``, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.airflow_compat import AirflowFailException
from tests._kit.batches import ENDPOINT, MODEL
from tests._kit.connection import set_connection
from tests._kit.operators import create_op, write_input
from tests._kit.ti import FakeTI, context


def nothing_uploaded(emulator: EmulatorServer) -> bool:
    return len(emulator.files) == 0 and len(emulator.batches) == 0


def test_a_cap_below_the_estimate_uploads_nothing(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl", max_tokens=None)
    ti = FakeTI()

    with pytest.raises(AirflowFailException) as info:
        create_op(input_file=path, max_cost_usd=0.001).execute(context(ti))

    message = str(info.value)
    estimate = ti.xcoms["estimate"]
    assert estimate["cost_usd"] > 0.001
    assert f"at most ${estimate['cost_usd']:.2f}" in message
    assert "exceeds max_cost_usd=$0.001000" in message
    assert "Nothing was uploaded" in message
    assert "4 of 4 requests set no completion-token limit" in message
    assert nothing_uploaded(openai_conn)
    assert openai_conn.counters["POST /v1/files"] == 0


def test_a_cap_above_the_estimate_lets_the_batch_run_and_bounds_its_cost(
    openai_conn: EmulatorServer, tmp_path: Path
) -> None:
    ti = FakeTI()
    op = create_op(input_file=write_input(tmp_path / "in.jsonl"), max_cost_usd=0.01, wait_for_completion=True)

    batch_id = op.execute(context(ti))

    assert openai_conn.get_batch(batch_id)["status"] == "completed"
    estimate, cost = ti.xcoms["estimate"], ti.xcoms["cost"]
    # 4 x 32 output tokens at most, against the emulator's 4 x 8 actual; every line's bytes bound its input.
    assert estimate["output_tokens"] == 128 >= cost["output_tokens"]
    assert estimate["input_tokens"] >= cost["input_tokens"]
    assert estimate["cost_usd"] >= cost["cost_usd"] > 0


def test_dry_run_returns_the_estimate_and_touches_nothing(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl")
    ti = FakeTI()

    result = create_op(input_file=path, dry_run=True, wait_for_completion=True).execute(context(ti))

    assert result == ti.xcoms["estimate"]
    assert result["requests"] == 4 and result["output_tokens"] == 4 * 32
    assert result["input_tokens"] == path.stat().st_size
    hand = path.stat().st_size * 0.075 / 1e6 + 128 * 0.30 / 1e6  # gpt-4o-mini batch prices
    assert result["cost_usd"] == pytest.approx(hand, abs=2e-6)
    assert nothing_uploaded(openai_conn)
    assert "batch_id" not in ti.xcoms


def test_dry_run_still_rejects_an_invalid_input(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a"}\n')
    with pytest.raises(Exception, match="line 1"):
        create_op(input_file=path, dry_run=True).execute(context())
    assert nothing_uploaded(openai_conn)


def test_a_cap_that_cannot_be_checked_fails_before_upload(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl", model="my-deployment")
    with pytest.raises(AirflowFailException, match=r"Cannot check max_cost_usd=\$5.00.*not in the price table"):
        create_op(input_file=path, max_cost_usd=5).execute(context())
    assert nothing_uploaded(openai_conn)


def test_operator_prices_price_the_estimate(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl", model="my-deployment", max_tokens=1000)
    prices = {"my-deployment": {"input": 100, "output": 200}}  # 4,000 output tokens: $0.80 at least
    with pytest.raises(AirflowFailException, match=r"exceeds max_cost_usd=\$0\.50"):
        create_op(input_file=path, max_cost_usd=0.5, prices=prices).execute(context())
    assert nothing_uploaded(openai_conn)


def test_connection_prices_price_the_estimate(
    openai_conn: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, openai_conn.base_url, prices={"my-deployment": {"input": 0.01, "output": 0.01}})
    path = write_input(tmp_path / "in.jsonl", model="my-deployment", max_tokens=1000)
    result = create_op(input_file=path, dry_run=True, max_cost_usd=1).execute(context())
    assert result["prices_source"] == "connection 'openai_default' extra 'prices'"


def test_images_make_a_cap_uncheckable(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": [part]}], "max_tokens": 10}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": ENDPOINT, "body": body}) + "\n")
    with pytest.raises(AirflowFailException, match="1 requests hold image, audio or file parts"):
        create_op(input_file=path, max_cost_usd=100).execute(context())
    assert nothing_uploaded(openai_conn)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"input_file_id": "file-1", "max_cost_usd": 1}, "need input_file"),
        ({"input_file_id": "file-1", "dry_run": True}, "need input_file"),
        ({"input_file": "in.jsonl", "max_cost_usd": -1}, "max_cost_usd must be a number"),
        ({"input_file": "in.jsonl", "max_cost_usd": "10"}, "max_cost_usd must be a number"),
        ({"input_file": "in.jsonl", "dry_run": "yes"}, "dry_run must be True or False"),
    ],
)
def test_cost_arguments_are_checked_when_the_dag_is_parsed(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        create_op(**kwargs)


def test_base_operator_dry_run_method_still_works(tmp_path: Path) -> None:
    op = create_op(input_file=str(tmp_path / "in.jsonl"), dry_run=True)
    assert callable(op.dry_run)


def test_unknown_model_is_warned_about_once_for_estimate_and_cost(
    openai_conn: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ti = FakeTI()
    op = create_op(input_file=write_input(tmp_path / "in.jsonl", model="my-deployment"), wait_for_completion=True)
    with caplog.at_level("WARNING", logger="airflow_provider_openai_batch.pricing"):
        op.execute(context(ti))
    assert ti.xcoms["estimate"]["cost_usd"] is None and ti.xcoms["cost"]["cost_usd"] is None
    assert ti.xcoms["cost"]["input_tokens"] > 0
    warnings = [r for r in caplog.records if "my-deployment" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
