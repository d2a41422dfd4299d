"""The job operator's cost: the pre-flight estimate over every shard, max_cost_usd, dry_run, and the cost XCom
summed over shards of different models (hand-calculated), against the emulator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.airflow_compat import AirflowFailException
from tests._kit.operators import job_op, write_input
from tests._kit.ti import FakeTI, context


def tokens(text: str) -> int:
    """The emulator's token count (airflow_provider_openai_batch/emulator/results.py)."""
    return max(1, math.ceil(len(text) / 4))


def test_job_cost_adds_up_shards_of_two_models_by_hand(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", models=["gpt-4o"] * 3 + ["gpt-4o-mini"] * 3, max_tokens=16)
    ti = FakeTI()

    manifest = job_op(tmp_path, max_requests_per_batch=2).execute(context(ti))

    assert manifest["verdict"] == "succeed" and len(openai_conn.batches) == 4
    cost = ti.xcoms["cost"]
    prompt = "Summarize ticket 0"  # the emulator answers "echo:<12 hex> <prompt>"
    per_in, per_out = tokens(prompt), tokens("echo:" + "0" * 12 + " " + prompt)  # 5 and 9 tokens
    hand = 3 * (per_in * 1.25 + per_out * 5.00) / 1e6 + 3 * (per_in * 0.075 + per_out * 0.30) / 1e6
    assert cost["cost_usd"] == pytest.approx(hand, abs=1e-9)
    assert (cost["batches"], cost["input_tokens"], cost["output_tokens"]) == (4, 6 * per_in, 6 * per_out)
    assert cost["priced_as"] == "gpt-4o, gpt-4o-mini"
    estimate = ti.xcoms["estimate"]
    assert estimate["cost_usd"] >= cost["cost_usd"]
    assert estimate["output_tokens"] == 6 * 16


def test_job_cap_below_the_estimate_uploads_nothing(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", models=["gpt-4o"] * 5, max_tokens=None)
    with pytest.raises(AirflowFailException, match="5 of 5 requests set no completion-token limit"):
        job_op(tmp_path, max_requests_per_batch=2, max_cost_usd=0.05).execute(context())
    assert len(openai_conn.files) == 0 and len(openai_conn.batches) == 0


def test_job_dry_run_returns_the_estimate(openai_conn: EmulatorServer, tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl", 5)
    ti = FakeTI()
    result = job_op(tmp_path, max_requests_per_batch=2, dry_run=True).execute(context(ti))
    assert result == ti.xcoms["estimate"]
    assert result["requests"] == 5 and result["input_tokens"] == path.stat().st_size
    assert len(openai_conn.files) == 0 and len(openai_conn.batches) == 0
    assert not (tmp_path / "out").exists()
