"""The ``cost`` XCom of a waiting task (sensor here; the Create operator shares the code): tokens and USD at
batch prices, with the prices' date and source, logged in one line; overrides; unknown models."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from airflow_provider_openai_batch.emulator import EmulatorServer
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor
from airflow_provider_openai_batch.triggers.batch import EVENT_TERMINAL
from tests._kit.batches import MODEL, jsonl, new_batch, wait_for_status
from tests._kit.connection import set_connection
from tests._kit.ti import FakeTI, context


def tokens(text: str) -> int:
    """The emulator's token count (airflow_provider_openai_batch/emulator/results.py)."""
    return max(1, math.ceil(len(text) / 4))


def finished(emulator: EmulatorServer, n: int = 4, *, model: str = MODEL) -> tuple[str, dict[str, Any]]:
    content = jsonl(n)
    if model != MODEL:
        content = content.replace(f'"{MODEL}"'.encode(), f'"{model}"'.encode())
    batch = new_batch(content=content)
    return batch.id, {
        "status": EVENT_TERMINAL,
        "batch_id": batch.id,
        "batch": json.loads(json.dumps(wait_for_status(emulator, batch.id, "completed"))),
    }


def run(batch_id: str, event: dict[str, Any], **kwargs: Any) -> tuple[FakeTI, OpenAIBatchSensor]:
    ti = FakeTI()
    op = OpenAIBatchSensor(task_id="wait", batch_id=batch_id, deferrable=True, **kwargs)
    op.execute_complete(context(ti), event)
    return ti, op


# The testkit's 4 requests are "prompt 0".."prompt 3" (2 tokens each); the emulator answers
# "echo:<12 hex> prompt i" (26 chars, 7 tokens).
IN_TOKENS = 4 * tokens("prompt 0")
OUT_TOKENS = 4 * tokens("echo:" + "0" * 12 + " prompt 0")


def test_cost_xcom_matches_a_hand_calculation(openai_conn: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    batch_id, event = finished(openai_conn)

    ti, _ = run(batch_id, event)

    cost = ti.xcoms["cost"]
    assert (cost["input_tokens"], cost["output_tokens"]) == (IN_TOKENS, OUT_TOKENS) == (8, 28)
    assert cost["cached_input_tokens"] == cost["reasoning_tokens"] == 0
    # gpt-4o-mini at batch prices: 0.075 input, 0.30 output per 1M tokens.
    assert cost["cost_usd"] == pytest.approx(8 * 0.075 / 1e6 + 28 * 0.30 / 1e6)
    assert (cost["priced_as"], cost["prices_as_of"]) == ("gpt-4o-mini", "2025-08-15")
    assert "openai.com" in cost["prices_source"]


class Lines:
    """Stands in for the task's logger; keeps the formatted messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, msg: str, *args: Any, **_: Any) -> None:
        self.lines.append(msg % args if args else msg)

    info = warning = debug = error = _keep


def test_cost_is_logged_in_one_line(openai_conn: EmulatorServer) -> None:
    batch_id, event = finished(openai_conn)
    op = OpenAIBatchSensor(task_id="wait", batch_id=batch_id, deferrable=True)
    op._cached_logger = Lines()  # type: ignore[assignment]
    op.execute_complete(context(FakeTI()), event)
    lines = [line for line in op._cached_logger.lines if "Batch usage" in line]  # type: ignore[attr-defined]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert f"{IN_TOKENS} input tokens" in lines[0] and "$0.000009" in lines[0] and "2025-08-15" in lines[0]


def test_operator_prices_override_the_connection_extra_which_overrides_the_table(
    openai_conn: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, openai_conn.base_url, prices={MODEL: {"input": 1000, "output": 2000}})
    batch_id, event = finished(openai_conn)

    ti, _ = run(batch_id, event)
    from_conn = ti.xcoms["cost"]
    ti, _ = run(batch_id, event, prices={MODEL: {"input": 10, "output": 20, "as_of": "2026-12-01"}})
    from_arg = ti.xcoms["cost"]

    assert from_conn["cost_usd"] == pytest.approx((IN_TOKENS * 1000 + OUT_TOKENS * 2000) / 1e6)
    assert from_conn["prices_source"] == "connection 'openai_default' extra 'prices'"
    assert from_arg["cost_usd"] == pytest.approx((IN_TOKENS * 10 + OUT_TOKENS * 20) / 1e6)
    assert (from_arg["prices_source"], from_arg["prices_as_of"]) == ("operator argument 'prices'", "2026-12-01")


def test_azure_deployment_name_is_priced_from_the_override(openai_conn: EmulatorServer) -> None:
    batch_id, event = finished(openai_conn, model="my-gpt4o-deployment")
    ti, _ = run(batch_id, event, prices={"my-gpt4o-deployment": {"input": 1.375, "output": 5.5}})
    assert ti.xcoms["cost"]["cost_usd"] == pytest.approx((IN_TOKENS * 1.375 + OUT_TOKENS * 5.5) / 1e6)


def test_unknown_model_reports_tokens_without_a_cost_and_warns_once(
    openai_conn: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    batch_id, event = finished(openai_conn, model="my-deployment")
    with caplog.at_level("WARNING"):
        ti, _ = run(batch_id, event)
    cost = ti.xcoms["cost"]
    assert cost["cost_usd"] is None and cost["input_tokens"] == IN_TOKENS
    assert "not in the price table" in cost["note"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "my-deployment" in r.getMessage()]
    assert len(warnings) == 1


def test_malformed_override_does_not_fail_a_finished_batch(
    openai_conn: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    batch_id, event = finished(openai_conn)
    with caplog.at_level("WARNING"):
        ti, _ = run(batch_id, event, prices={MODEL: {"input": "cheap"}})
    assert ti.xcoms["output_file_id"] is not None
    cost = ti.xcoms["cost"]
    assert cost["cost_usd"] is None and "'input' must be a number" in cost["note"]
    assert cost["input_tokens"] == IN_TOKENS


def test_batch_without_usage_pushes_no_cost(openai_conn: EmulatorServer) -> None:
    batch_id, event = finished(openai_conn)
    event["batch"]["usage"] = None  # batches created before 2025-09-07 report none
    ti, _ = run(batch_id, event)
    assert ti.xcoms["cost"] is None
