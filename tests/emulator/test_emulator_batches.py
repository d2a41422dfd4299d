"""Batches API of the emulator: create validation, lifecycle, input validation, cancel, expiry, results."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests

from airflow_provider_openai_batch.emulator import EmulatorServer, ManualClock
from tests._kit.emulator_calls import (
    STAMPS,
    assert_batch_object,
    assert_error,
    assert_file_object,
    chat_jsonl,
    chat_line,
    content_lines,
    create,
    echo,
    get_batch,
    jsonl,
    submit,
    tokens,
    upload,
)

PHASE = 10  # the manual_clock_emulator fixture uses phase_seconds=10


def stamps(b: dict[str, Any]) -> dict[str, Any]:
    return {k: b[k] for k in STAMPS if b[k] is not None}


# --------------------------------------------------------------------------- create validation


def test_create_returns_full_validating_batch(mc: EmulatorServer, session: requests.Session) -> None:
    f = upload(session, mc, chat_jsonl(3))
    b = create(session, mc, f["id"], metadata={"team": "ml", "emulator": "hold"})
    assert_batch_object(b)
    t0 = int(mc.clock.now())
    assert b == {
        "id": b["id"],
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": None,
        "errors": None,
        "input_file_id": f["id"],
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": t0,
        "in_progress_at": None,
        "expires_at": t0 + 86400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": None,
        "metadata": {"team": "ml", "emulator": "hold"},
    }
    assert mc.counters["batches_created"] == 1
    assert list(mc.batches) == [b["id"]]
    assert mc.batches[b["id"]] == b
    with pytest.raises(TypeError):
        mc.batches[b["id"]] = {}  # type: ignore[index]


def _bad_create_cases(batch_file: str, other_file: str) -> list[tuple[dict[str, Any], str | None, str | None]]:
    base = {"input_file_id": batch_file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}

    def w(**kw: Any) -> dict[str, Any]:
        d = {**base, **kw}
        return {k: v for k, v in d.items() if v is not ...}

    return [
        (w(input_file_id=...), "input_file_id", "missing_required_parameter"),
        (w(endpoint=...), "endpoint", "missing_required_parameter"),
        (w(completion_window=...), "completion_window", "missing_required_parameter"),
        (w(input_file_id=123), "input_file_id", "invalid_type"),
        (w(input_file_id="file-doesnotexist"), "input_file_id", "invalid_value"),
        (w(input_file_id=other_file), "input_file_id", "invalid_value"),
        (w(endpoint="/v1/audio/speech"), "endpoint", "invalid_value"),
        (w(completion_window="48h"), "completion_window", "invalid_value"),
        (w(metadata={f"k{i}": "v" for i in range(17)}), "metadata", "object_above_max_properties"),
        (w(metadata={"k" * 65: "v"}), "metadata", "string_above_max_length"),
        (w(metadata={"k": "v" * 513}), "metadata.k", "string_above_max_length"),
        (w(metadata={"k": 1}), "metadata.k", "invalid_type"),
        (w(metadata=["a"]), "metadata", "invalid_type"),
        (w(output_expires_after={"anchor": "created_at", "seconds": 3599}), "output_expires_after.seconds", None),
        (w(output_expires_after={"anchor": "created_at", "seconds": 2592001}), "output_expires_after.seconds", None),
        (w(output_expires_after={"anchor": "now", "seconds": 3600}), "output_expires_after.anchor", "invalid_value"),
        (w(output_expires_after={"anchor": "created_at"}), "output_expires_after.seconds", None),
        (w(output_expires_after=5), "output_expires_after", "invalid_type"),
        (w(foo="bar"), None, None),
    ]


def test_create_validation_errors(mc: EmulatorServer, session: requests.Session) -> None:
    batch_file = upload(session, mc, chat_jsonl(1))["id"]
    other = upload(session, mc, b"x", filename="x.txt", purpose="user_data")["id"]
    for payload, param, code in _bad_create_cases(batch_file, other):
        err = assert_error(session.post(f"{mc.base_url}/batches", json=payload), 400)
        assert err["param"] == param, (payload, err)
        if code is not None:
            assert err["code"] == code, (payload, err)
    err = assert_error(
        session.post(f"{mc.base_url}/batches", data=b"{nope", headers={"Content-Type": "application/json"}), 400
    )
    assert "JSON" in err["message"]
    assert_error(session.post(f"{mc.base_url}/batches", json=["a"]), 400)
    assert mc.counters["batches_created"] == 0
    assert len(mc.batches) == 0


def test_create_accepts_limits_and_every_endpoint(mc: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, mc, chat_jsonl(1))["id"]
    meta = {f"k{i:02d}" + "x" * 61: "v" * 512 for i in range(16)}
    b = create(session, mc, fid, metadata=meta, output_expires_after={"anchor": "created_at", "seconds": 3600})
    assert b["metadata"] == meta
    for ep in (
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    ):
        assert create(session, mc, fid, endpoint=ep, metadata=None)["endpoint"] == ep
    assert create(session, mc, fid, metadata=None)["metadata"] is None


def test_unknown_batch_404(mc: EmulatorServer, session: requests.Session) -> None:
    for r in (
        session.get(f"{mc.base_url}/batches/batch_nope"),
        session.post(f"{mc.base_url}/batches/batch_nope/cancel"),
    ):
        err = assert_error(r, 404)
        assert err["message"] == "No batch found with id 'batch_nope'."


# --------------------------------------------------------------------------- lifecycle


def test_full_lifecycle_with_manual_clock(mc: EmulatorServer, session: requests.Session) -> None:
    clock = mc.clock
    assert isinstance(clock, ManualClock)
    n = 10
    b = submit(session, mc, chat_jsonl(n), metadata={"k": "v"})
    t0 = b["created_at"]
    bid = b["id"]
    clock.advance(PHASE - 1)
    assert get_batch(session, mc, bid)["status"] == "validating"

    clock.advance(1)
    b = get_batch(session, mc, bid)
    assert_batch_object(b)
    assert b["status"] == "in_progress"
    assert stamps(b) == {"in_progress_at": t0 + PHASE}
    assert b["model"] == "gpt-4o-mini"
    assert b["request_counts"] == {"total": n, "completed": 0, "failed": 0}
    assert b["usage"] is None

    clock.advance(PHASE / 2)
    b = get_batch(session, mc, bid)
    assert b["status"] == "in_progress"
    assert b["request_counts"] == {"total": n, "completed": n // 2, "failed": 0}
    assert b["usage"] is not None and b["usage"]["input_tokens"] > 0

    clock.advance(PHASE / 2)
    b = get_batch(session, mc, bid)
    assert b["status"] == "finalizing"
    assert stamps(b) == {"in_progress_at": t0 + PHASE, "finalizing_at": t0 + 2 * PHASE}
    assert b["request_counts"] == {"total": n, "completed": n, "failed": 0}
    assert b["output_file_id"] is None

    clock.advance(PHASE)
    b = get_batch(session, mc, bid)
    assert_batch_object(b)
    assert b["status"] == "completed"
    assert stamps(b) == {
        "in_progress_at": t0 + PHASE,
        "finalizing_at": t0 + 2 * PHASE,
        "completed_at": t0 + 3 * PHASE,
    }
    assert b["request_counts"] == {"total": n, "completed": n, "failed": 0}
    assert b["error_file_id"] is None
    assert b["errors"] is None
    out = session.get(f"{mc.base_url}/files/{b['output_file_id']}").json()
    assert_file_object(out)
    assert out["purpose"] == "batch_output"
    assert out["filename"] == f"{bid}_output.jsonl"
    assert out["created_at"] == t0 + 3 * PHASE
    assert out["expires_at"] == out["created_at"] + 30 * 86400
    lines = content_lines(session, mc, b["output_file_id"])
    assert len(lines) == n
    raw = session.get(f"{mc.base_url}/files/{b['output_file_id']}/content").content
    assert out["bytes"] == len(raw)
    for line in lines:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["error"] is None
        assert line["id"] == "batch_req_" + hashlib.sha256(f"{bid}:{line['custom_id']}".encode()).hexdigest()[:32]
        resp = line["response"]
        assert set(resp) == {"status_code", "request_id", "body"}
        assert resp["status_code"] == 200 and resp["request_id"].startswith("req_")
        body = resp["body"]
        i = int(line["custom_id"].split("-")[1])
        prompt = f"prompt number {i}"
        assert body["object"] == "chat.completion"
        assert body["model"] == "gpt-4o-mini"
        assert body["created"] == t0 + PHASE
        assert body["choices"][0]["message"] == {
            "role": "assistant",
            "content": echo(prompt),
            "refusal": None,
            "annotations": [],
        }
        assert body["choices"][0]["finish_reason"] == "stop"
        usage = body["usage"]
        assert usage["prompt_tokens"] == tokens(prompt)
        assert usage["completion_tokens"] == tokens(echo(prompt))
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert b["usage"] == {
        "input_tokens": sum(x["response"]["body"]["usage"]["prompt_tokens"] for x in lines),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": sum(x["response"]["body"]["usage"]["completion_tokens"] for x in lines),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": sum(x["response"]["body"]["usage"]["total_tokens"] for x in lines),
    }
    # reading again changes nothing
    assert get_batch(session, mc, bid) == b
    clock.advance(1000)
    assert get_batch(session, mc, bid) == b


def test_output_order_is_not_input_order(mc: EmulatorServer, session: requests.Session) -> None:
    n = 20
    b = submit(session, mc, chat_jsonl(n))
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    ids = [x["custom_id"] for x in content_lines(session, mc, b["output_file_id"])]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(n))
    assert len(set(ids)) == n
    assert ids != [f"req-{i}" for i in range(n)]
    assert ids == sorted(ids, key=lambda c: hashlib.sha256(c.encode()).hexdigest())


def test_batch_lifecycle_on_real_clock(emulator: EmulatorServer, session: requests.Session) -> None:
    import time

    b = submit(session, emulator, chat_jsonl(4))
    assert b["status"] == "validating"
    deadline = time.monotonic() + 5
    seen: list[str] = []
    while time.monotonic() < deadline:
        b = get_batch(session, emulator, b["id"])
        if not seen or seen[-1] != b["status"]:
            seen.append(b["status"])
        if b["status"] == "completed":
            break
        time.sleep(0.01)
    assert seen[-1] == "completed"
    assert set(seen) <= {"validating", "in_progress", "finalizing", "completed"}
    assert b["request_counts"] == {"total": 4, "completed": 4, "failed": 0}


def test_set_phase_seconds_and_slow(mc: EmulatorServer, session: requests.Session) -> None:
    slow = submit(session, mc, chat_jsonl(2), metadata={"emulator": "slow"})
    normal = submit(session, mc, chat_jsonl(2))
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    assert get_batch(session, mc, slow["id"])["status"] == "validating"
    assert get_batch(session, mc, normal["id"])["status"] == "in_progress"
    mc.clock.advance(20 * PHASE - PHASE)  # type: ignore[attr-defined]
    assert get_batch(session, mc, slow["id"])["status"] == "in_progress"
    mc.set_phase_seconds(0)
    assert mc.phase_seconds == 0
    assert get_batch(session, mc, slow["id"])["status"] == "completed"
    with pytest.raises(ValueError):
        mc.set_phase_seconds(-1)


# --------------------------------------------------------------------------- input validation


def _line(cid: str = "a", **over: Any) -> dict[str, Any]:
    d = chat_line(cid, "hi")
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


VALIDATION_CASES = [
    ("invalid_json_line", [_line("a"), '{"custom_id": "b", ', _line("c")], 2, None),
    ("invalid_json_line", [_line("a"), _line("b"), "[1, 2]"], 3, None),
    ("duplicate_custom_id", [_line("a"), _line("b"), _line("a")], 3, "custom_id"),
    ("url_mismatch", [_line("a"), _line("b", url="/v1/embeddings")], 2, "url"),
    ("model_mismatch", [_line("a"), _line("b"), chat_line("c", "x", model="gpt-4o")], 3, "body.model"),
    ("invalid_request", [_line("a", custom_id=...)], 1, "custom_id"),
    ("invalid_request", [_line("a"), _line("b", method=...)], 2, "method"),
    ("invalid_request", [_line("a"), _line("b", method="GET")], 2, "method"),
    ("invalid_request", [_line("a"), _line("b"), _line("c", body=...)], 3, "body"),
    ("invalid_request", [_line("a", url=...)], 1, "url"),
    ("empty_batch", [], None, None),
]


@pytest.mark.parametrize(("code", "lines", "line_no", "param"), VALIDATION_CASES)
def test_input_validation_failures(
    mc: EmulatorServer,
    session: requests.Session,
    code: str,
    lines: list[Any],
    line_no: int | None,
    param: str | None,
) -> None:
    b = submit(session, mc, jsonl(lines))
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert_batch_object(b)
    assert b["status"] == "failed"
    assert stamps(b) == {"failed_at": b["created_at"] + PHASE}
    assert b["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert b["output_file_id"] is None and b["error_file_id"] is None
    assert b["usage"] is None and b["model"] is None
    assert b["errors"]["object"] == "list"
    [err] = b["errors"]["data"]
    assert err["code"] == code
    assert err["line"] == line_no
    assert err["param"] == param
    assert isinstance(err["message"], str) and err["message"]
    assert_error(session.post(f"{mc.base_url}/batches/{b['id']}/cancel"), 409)


def test_blank_lines_are_skipped_but_counted(mc: EmulatorServer, session: requests.Session) -> None:
    content = b"\n" + jsonl([_line("a")]) + b"\n\n" + b"{bad\n"
    b = submit(session, mc, content)
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert [(e["code"], e["line"]) for e in b["errors"]["data"]] == [("invalid_json_line", 5)]


def test_too_many_tasks(mc: EmulatorServer, session: requests.Session) -> None:
    line = b'{"custom_id":"%d","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}}\n'
    content = b"".join(line % i for i in range(50_001))
    b = submit(session, mc, content, endpoint="/v1/embeddings")
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert b["status"] == "failed"
    assert [(e["code"], e["line"]) for e in b["errors"]["data"]] == [("too_many_tasks", None)]


def test_multiple_errors_are_all_reported(mc: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, mc, jsonl([_line("a"), "nope", _line("a"), _line("c", url="/v1/x")]))
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert [(e["code"], e["line"]) for e in b["errors"]["data"]] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("url_mismatch", 4),
    ]


# --------------------------------------------------------------------------- failing requests


def test_failing_requests_go_to_error_file(mc: EmulatorServer, session: requests.Session) -> None:
    lines = [chat_line(f"r{i}", f"p{i}") for i in range(6)]
    for i in (1, 4):
        lines[i]["body"]["emulator_fail"] = True
    b = submit(session, mc, jsonl(lines))
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert b["status"] == "completed"
    assert b["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    out = content_lines(session, mc, b["output_file_id"])
    errs = content_lines(session, mc, b["error_file_id"])
    assert sorted(x["custom_id"] for x in out) == ["r0", "r2", "r3", "r5"]
    assert sorted(x["custom_id"] for x in errs) == ["r1", "r4"]
    for e in errs:
        assert set(e) == {"id", "custom_id", "response", "error"}
        assert e["error"] is None
        assert e["response"]["status_code"] == 400
        assert e["response"]["request_id"].startswith("req_")
        assert set(e["response"]["body"]) == {"error"}
        assert set(e["response"]["body"]["error"]) == {"message", "type", "param", "code"}
    ef = session.get(f"{mc.base_url}/files/{b['error_file_id']}").json()
    assert ef["filename"] == f"{b['id']}_error.jsonl" and ef["purpose"] == "batch_output"
    assert b["usage"]["input_tokens"] == sum(x["response"]["body"]["usage"]["prompt_tokens"] for x in out)


def test_model_fail_suffix_fails_every_request(mc: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, mc, jsonl([chat_line(f"r{i}", "x", model="gpt-x-fail") for i in range(3)]))
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert b["status"] == "completed"
    assert b["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert b["output_file_id"] is None
    assert b["usage"] is None
    errs = content_lines(session, mc, b["error_file_id"])
    assert {e["response"]["body"]["error"]["code"] for e in errs} == {"model_not_found"}


# --------------------------------------------------------------------------- cancel / expire


def test_cancel_hold_batch_partial_results(mc: EmulatorServer, session: requests.Session) -> None:
    n = 10
    b = submit(session, mc, chat_jsonl(n), metadata={"emulator": "hold"})
    bid, t0 = b["id"], b["created_at"]
    mc.clock.advance(PHASE * 5)  # type: ignore[attr-defined]
    b = get_batch(session, mc, bid)
    assert b["status"] == "in_progress"  # held
    assert b["request_counts"] == {"total": n, "completed": n // 2, "failed": 0}
    t_cancel = int(mc.clock.now())
    r = session.post(f"{mc.base_url}/batches/{bid}/cancel")
    assert r.status_code == 200
    c = r.json()
    assert_batch_object(c)
    assert c["status"] == "cancelling"
    assert stamps(c) == {"in_progress_at": t0 + PHASE, "cancelling_at": t_cancel}
    assert c["request_counts"] == {"total": n, "completed": n // 2, "failed": 0}
    mc.clock.advance(1)  # type: ignore[attr-defined]
    # cancelling again (with a {} body) returns the batch unchanged
    again = session.post(f"{mc.base_url}/batches/{bid}/cancel", json={})
    assert again.status_code == 200 and again.json() == c
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    d = get_batch(session, mc, bid)
    assert_batch_object(d)
    assert d["status"] == "cancelled"
    assert stamps(d) == {"in_progress_at": t0 + PHASE, "cancelling_at": t_cancel, "cancelled_at": t_cancel + PHASE}
    assert d["request_counts"] == {"total": n, "completed": n // 2, "failed": n - n // 2}
    out = content_lines(session, mc, d["output_file_id"])
    errs = content_lines(session, mc, d["error_file_id"])
    assert len(out) == n // 2 and all(x["response"]["status_code"] == 200 for x in out)
    assert len(errs) == n - n // 2
    for e in errs:
        assert e["response"] is None
        assert e["error"]["code"] == "batch_cancelled" and e["error"]["message"]
    assert {x["custom_id"] for x in out} | {x["custom_id"] for x in errs} == {f"req-{i}" for i in range(n)}
    err = assert_error(session.post(f"{mc.base_url}/batches/{bid}/cancel"), 409)
    assert err["message"] == "Cannot cancel a batch with status 'cancelled'."


def test_cancel_while_validating(mc: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, mc, chat_jsonl(3))
    c = session.post(f"{mc.base_url}/batches/{b['id']}/cancel", data=b"").json()
    assert c["status"] == "cancelling" and c["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    d = get_batch(session, mc, b["id"])
    assert d["status"] == "cancelled"
    assert d["in_progress_at"] is None
    assert d["output_file_id"] is None and d["error_file_id"] is None


def test_cancel_finished_batches_409(mc: EmulatorServer, session: requests.Session) -> None:
    done = submit(session, mc, chat_jsonl(2))
    failed = submit(session, mc, b"")
    expired = submit(session, mc, chat_jsonl(2), metadata={"emulator": "expire"})
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    for b, status in ((done, "completed"), (failed, "failed"), (expired, "expired")):
        err = assert_error(session.post(f"{mc.base_url}/batches/{b['id']}/cancel"), 409)
        assert err["message"] == f"Cannot cancel a batch with status '{status}'."
        assert get_batch(session, mc, b["id"])["status"] == status


def test_expire_via_metadata(mc: EmulatorServer, session: requests.Session) -> None:
    n = 9
    b = submit(session, mc, chat_jsonl(n), metadata={"emulator": "expire"})
    t0 = b["created_at"]
    mc.clock.advance(2 * PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    assert_batch_object(b)
    assert b["status"] == "expired"
    assert stamps(b) == {"in_progress_at": t0 + PHASE, "expired_at": t0 + 2 * PHASE}
    assert b["request_counts"] == {"total": n, "completed": n // 2, "failed": n - n // 2}
    out = content_lines(session, mc, b["output_file_id"])
    errs = content_lines(session, mc, b["error_file_id"])
    assert len(out) == n // 2
    assert len(errs) == n - n // 2
    assert all(e["error"]["code"] == "batch_expired" and e["response"] is None for e in errs)


def test_expire_batch_api_and_window(mc: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, mc, chat_jsonl(4))
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    e = mc.expire_batch(b["id"])
    assert e["status"] == "expired" and e["expired_at"] == int(mc.clock.now())
    assert e["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    assert e["output_file_id"] is None
    assert len(content_lines(session, mc, e["error_file_id"])) == 4
    # a held batch expires when its 24 h window passes
    h = submit(session, mc, chat_jsonl(4), metadata={"emulator": "hold"})
    mc.clock.advance(86_400 + 5)  # type: ignore[attr-defined]
    h = get_batch(session, mc, h["id"])
    assert h["status"] == "expired" and h["expired_at"] == h["created_at"] + 86_400 == h["expires_at"]
    assert h["request_counts"] == {"total": 4, "completed": 2, "failed": 2}


# --------------------------------------------------------------------------- endpoints


def _run(mc: EmulatorServer, s: requests.Session, endpoint: str, bodies: list[dict[str, Any]]) -> list[Any]:
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": b} for i, b in enumerate(bodies)]
    b = submit(s, mc, jsonl(lines), endpoint=endpoint)
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = get_batch(s, mc, b["id"])
    assert b["status"] == "completed", b
    out = sorted(content_lines(s, mc, b["output_file_id"]), key=lambda x: x["custom_id"])
    return [x["response"]["body"] for x in out]


def test_embeddings_bodies(mc: EmulatorServer, session: requests.Session) -> None:
    [one, many] = _run(
        mc, session, "/v1/embeddings", [{"model": "e", "input": "hello"}, {"model": "e", "input": ["a", "bb"]}]
    )
    assert one["object"] == "list" and one["model"] == "e"
    digest = hashlib.sha256(b"hello").digest()
    expected = [round(int.from_bytes(digest[4 * i : 4 * i + 4], "big") / 2**32 * 2 - 1, 6) for i in range(8)]
    assert one["data"] == [{"object": "embedding", "index": 0, "embedding": expected}]
    assert one["usage"] == {"prompt_tokens": tokens("hello"), "total_tokens": tokens("hello")}
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in many["data"])


def test_responses_completions_and_others(mc: EmulatorServer, session: requests.Session) -> None:
    [r1, r2] = _run(
        mc,
        session,
        "/v1/responses",
        [
            {"model": "m", "input": "tell me"},
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hey"}]}]},
        ],
    )
    assert r1["object"] == "response" and r1["status"] == "completed"
    msg = r1["output"][0]
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"][0]["type"] == "output_text" and msg["content"][0]["text"] == echo("tell me")
    assert r1["usage"]["input_tokens"] == tokens("tell me")
    assert set(r1["usage"]) == {
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    }
    assert r2["output"][0]["content"][0]["text"] == echo("hey")
    [c] = _run(mc, session, "/v1/completions", [{"model": "m", "prompt": "once upon"}])
    assert c["object"] == "text_completion" and c["choices"][0]["text"] == echo("once upon")
    [m] = _run(mc, session, "/v1/moderations", [{"model": "omni", "input": "x"}])
    assert m["results"][0]["flagged"] is False
    [i] = _run(mc, session, "/v1/images/generations", [{"model": "img", "prompt": "cat"}])
    assert isinstance(i["created"], int) and "b64_json" in i["data"][0]
    [v] = _run(mc, session, "/v1/videos", [{"model": "sora", "prompt": "cat"}])
    assert v["object"] == "video"


def test_output_expires_after_applies_to_output_file(mc: EmulatorServer, session: requests.Session) -> None:
    f = upload(session, mc, chat_jsonl(2))
    b = create(session, mc, f["id"], output_expires_after={"anchor": "created_at", "seconds": 7200})
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    b = get_batch(session, mc, b["id"])
    out = session.get(f"{mc.base_url}/files/{b['output_file_id']}").json()
    assert out["expires_at"] == out["created_at"] + 7200


def test_input_file_deleted_after_create_still_runs(mc: EmulatorServer, session: requests.Session) -> None:
    f = upload(session, mc, chat_jsonl(2))
    b = create(session, mc, f["id"])
    assert session.delete(f"{mc.base_url}/files/{f['id']}").status_code == 200
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    assert get_batch(session, mc, b["id"])["status"] == "completed"


# --------------------------------------------------------------------------- listing


def test_list_batches_pagination_newest_first(mc: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, mc, chat_jsonl(1))["id"]
    ids = []
    for _ in range(25):
        ids.append(create(session, mc, fid)["id"])
        mc.clock.advance(0.5)  # type: ignore[attr-defined]
    newest_first = ids[::-1]
    url = f"{mc.base_url}/batches"
    default = session.get(url).json()
    assert set(default) == {"object", "data", "first_id", "last_id", "has_more"}
    assert default["object"] == "list"
    assert [b["id"] for b in default["data"]] == newest_first[:20]
    assert default["has_more"] is True
    assert default["first_id"] == newest_first[0] and default["last_id"] == newest_first[19]
    for b in default["data"]:
        assert_batch_object(b)
    collected: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if after:
            params["after"] = after
        page = session.get(url, params=params).json()
        collected += [b["id"] for b in page["data"]]
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert collected == newest_first
    empty = session.get(url, params={"after": newest_first[-1]}).json()
    assert empty == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}
    assert len(session.get(url, params={"limit": 100}).json()["data"]) == 25
    assert len(session.get(url, params={"limit": 1}).json()["data"]) == 1
    for bad in ("0", "101", "-1", "ten"):
        err = assert_error(session.get(url, params={"limit": bad}), 400)
        assert err["param"] == "limit"


def test_list_batches_empty(mc: EmulatorServer, session: requests.Session) -> None:
    page = session.get(f"{mc.base_url}/batches?api-version=2024-10-21").json()
    assert page == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}


def test_batches_view_is_readonly_and_advanced(mc: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, mc, chat_jsonl(1))
    mc.clock.advance(3 * PHASE)  # type: ignore[attr-defined]
    view = mc.batches
    assert view[b["id"]]["status"] == "completed"
    assert mc.get_batch(b["id"])["status"] == "completed"
    assert json.loads(mc.file_content(view[b["id"]]["output_file_id"]).splitlines()[0])["custom_id"] == "req-0"


def test_enqueued_request_limit_per_model(mc: EmulatorServer, session: requests.Session) -> None:
    mc.store.enqueued_request_limit = 5
    created = []
    for content in (
        chat_jsonl(3),
        chat_jsonl(3),  # 3 + 3 > 5 while the first runs
        chat_jsonl(2),  # 3 + 2 = 5
        chat_jsonl(3, model="gpt-4o"),  # another model has a limit of its own
    ):
        created.append(submit(session, mc, content))
        mc.clock.advance(1)  # validated in this order
    first, over, fits, other = created
    mc.clock.advance(PHASE)

    seen = {b["id"]: get_batch(session, mc, b["id"]) for b in (first, over, fits, other)}
    assert [seen[b["id"]]["status"] for b in (first, over, fits, other)] == [
        "in_progress",
        "failed",
        "in_progress",
        "in_progress",
    ]
    (error,) = seen[over["id"]]["errors"]["data"]
    assert error["code"] == "request_limit_exceeded" and "Limit: 5 enqueued requests" in error["message"]
    assert mc.store.peak_in_progress == {"gpt-4o-mini": 2, "gpt-4o": 1}

    mc.clock.advance(2 * PHASE)  # the first two end: the same batch now fits
    again = submit(session, mc, chat_jsonl(3))
    mc.clock.advance(PHASE)
    assert get_batch(session, mc, again["id"])["status"] == "in_progress"


def test_stall_holds_a_batch_at_its_share_until_cancelled(mc: EmulatorServer, session: requests.Session) -> None:
    n = 10
    b = submit(session, mc, chat_jsonl(n), metadata={"emulator": "stall=60"})
    mc.clock.advance(PHASE * 50)  # type: ignore[attr-defined]
    assert get_batch(session, mc, b["id"])["request_counts"] == {"total": n, "completed": 6, "failed": 0}
    assert get_batch(session, mc, b["id"])["status"] == "in_progress"

    assert session.post(f"{mc.base_url}/batches/{b['id']}/cancel").json()["status"] == "cancelling"
    mc.clock.advance(PHASE)  # type: ignore[attr-defined]
    done = get_batch(session, mc, b["id"])
    assert done["status"] == "cancelled"
    assert done["request_counts"] == {"total": n, "completed": 6, "failed": 4}
    assert len(content_lines(session, mc, done["output_file_id"])) == 6
    cancelled = content_lines(session, mc, done["error_file_id"])
    assert [line["error"]["code"] for line in cancelled] == ["batch_cancelled"] * 4


@pytest.mark.parametrize("flag", ["stall=101", "stall=-1", "stall=x"])
def test_a_bad_stall_share_is_refused_at_create(mc: EmulatorServer, session: requests.Session, flag: str) -> None:
    body = {"input_file_id": upload(session, mc, chat_jsonl(2))["id"], "endpoint": "/v1/chat/completions"}
    body["completion_window"] = "24h"
    answer = session.post(f"{mc.base_url}/batches", json={**body, "metadata": {"emulator": flag}})

    assert answer.status_code == 400 and "percentage" in answer.json()["error"]["message"]
    assert not mc.batches
