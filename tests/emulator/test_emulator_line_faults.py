"""Per-line faults of the emulator: a share of a batch's lines expire (``expire=N``), a share answer 500
(``body.emulator_error_rate``), drawn so that a line sent again draws again."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from airflow_provider_openai_batch.emulator import EmulatorServer, ManualClock
from tests._kit.emulator_calls import chat_line, content_lines, get_batch, jsonl, submit, upload

PHASE = 10  # the manual_clock_emulator fixture uses phase_seconds=10


def finished(session: requests.Session, mc: EmulatorServer, content: bytes, flags: str = "") -> dict[str, Any]:
    b = submit(session, mc, content, metadata={"emulator": flags} if flags else None)
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    return get_batch(session, mc, b["id"])


def errors_by_code(session: requests.Session, mc: EmulatorServer, batch: dict[str, Any]) -> dict[str, list[str]]:
    codes: dict[str, list[str]] = {}
    for line in content_lines(session, mc, batch["error_file_id"]) if batch["error_file_id"] else []:
        code = line["error"]["code"] if line["error"] else line["response"]["body"]["error"]["type"]
        codes.setdefault(code, []).append(line["custom_id"])
    return codes


def lines(n: int, **body: Any) -> bytes:
    return jsonl([chat_line(f"req-{i}", f"prompt number {i}", **body) for i in range(n)])


@pytest.mark.parametrize(("n", "percent", "unfinished"), [(40, 10, 4), (45, 10, 4), (9, 10, 0), (7, 100, 7)])
def test_expire_n_leaves_that_share_of_the_batch_unfinished(
    mc: EmulatorServer, session: requests.Session, n: int, percent: int, unfinished: int
) -> None:
    b = finished(session, mc, lines(n), f"expire={percent}")

    assert b["status"] == "expired" and b["expired_at"] is not None
    assert b["request_counts"] == {"total": n, "completed": n - unfinished, "failed": unfinished}
    expired = errors_by_code(session, mc, b).get("batch_expired", [])
    assert len(expired) == unfinished
    if b["output_file_id"]:
        answered = {line["custom_id"] for line in content_lines(session, mc, b["output_file_id"])}
        assert len(answered) == n - unfinished and not answered & set(expired)
    # The last share in processing order, which is by sha256(custom_id): the same lines in any file.
    by_hash = sorted((f"req-{i}" for i in range(n)), key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    assert sorted(expired) == sorted(by_hash[n - unfinished :])


def test_expire_alone_keeps_expiring_half(mc: EmulatorServer, session: requests.Session) -> None:
    b = finished(session, mc, lines(9), "expire")
    assert b["request_counts"] == {"total": 9, "completed": 4, "failed": 5}


@pytest.mark.parametrize("flag", ["expire=101", "expire=-5", "expire=half"])
def test_a_bad_expire_share_is_refused_at_create(mc: EmulatorServer, session: requests.Session, flag: str) -> None:
    body = {"input_file_id": upload(session, mc, lines(2))["id"], "endpoint": "/v1/chat/completions"}
    answer = session.post(
        f"{mc.base_url}/batches", json={**body, "completion_window": "24h", "metadata": {"emulator": flag}}
    )

    assert answer.status_code == 400 and "percentage" in answer.json()["error"]["message"]
    assert not mc.batches


def test_expiry_and_server_errors_together(mc: EmulatorServer, session: requests.Session) -> None:
    b = finished(session, mc, lines(200, emulator_error_rate=0.05), "expire=10")

    codes = errors_by_code(session, mc, b)
    assert len(codes["batch_expired"]) == 20 and 0 < len(codes["server_error"]) < 30
    assert b["request_counts"]["completed"] == 200 - 20 - len(codes["server_error"])


def test_the_same_file_sent_again_draws_its_500s_again(mc: EmulatorServer, session: requests.Session) -> None:
    content = lines(100, emulator_error_rate=0.2)
    draws = [errors_by_code(session, mc, finished(session, mc, content))["server_error"] for _ in range(3)]

    assert all(10 <= len(failed) <= 30 for failed in draws)  # about a fifth each time
    assert draws[0] != draws[1] != draws[2]  # a resubmitted line is not doomed to fail again
    # Deterministic: a fresh emulator given the same sequence of files draws the same lines.
    with EmulatorServer(phase_seconds=PHASE, clock=ManualClock()) as again:
        assert [
            errors_by_code(session, again, finished(session, again, content))["server_error"] for _ in range(3)
        ] == draws
