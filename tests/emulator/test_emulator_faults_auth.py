"""Auth, routing, counters and fault injection."""

from __future__ import annotations

import http.client
import json
import time

import pytest
import requests

from airflow_provider_openai_batch.emulator import EmulatorServer, parse_fault_spec
from tests._kit.emulator_calls import assert_error, chat_jsonl, create, get_batch, submit, upload

# --------------------------------------------------------------------------- auth & routing


def test_missing_key_401(emulator: EmulatorServer) -> None:
    r = requests.get(f"{emulator.base_url}/batches")
    err = assert_error(r, 401)
    assert err["code"] is None and "API key" in err["message"]


@pytest.mark.parametrize("header", ["Authorization", "api-key"])
def test_wrong_key_401_does_not_echo_key(emulator: EmulatorServer, header: str) -> None:
    secret = "sk-wrong-secret-0123456789"
    value = f"Bearer {secret}" if header == "Authorization" else secret
    r = requests.get(f"{emulator.base_url}/batches", headers={header: value})
    err = assert_error(r, 401)
    assert err["code"] == "invalid_api_key"
    assert secret not in r.text and "0123456789" not in r.text and "sk-wrong" not in r.text
    assert all(secret not in v for v in r.headers.values())


def test_good_key_both_headers(emulator: EmulatorServer) -> None:
    url = f"{emulator.base_url}/batches"
    assert requests.get(url, headers={"Authorization": "Bearer sk-emulator"}).status_code == 200
    assert requests.get(url, headers={"api-key": "sk-emulator"}).status_code == 200
    assert requests.get(url, headers={"Authorization": "Basic sk-emulator"}).status_code == 401


def test_custom_api_key() -> None:
    with EmulatorServer(api_key="sk-custom") as emu:
        url = f"{emu.base_url}/batches"
        assert requests.get(url, headers={"Authorization": "Bearer sk-emulator"}).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer sk-custom"}).status_code == 200


def test_unknown_routes_404(emulator: EmulatorServer, session: requests.Session) -> None:
    for method, path in (("GET", "/v1/nope"), ("PUT", "/v1/batches"), ("GET", "/v1/batches/b/cancel"), ("GET", "/")):
        r = session.request(method, emulator.url + path)
        err = assert_error(r, 404)
        assert err["message"].startswith(f"Invalid URL ({method} ")
    assert emulator.counters["GET <unmatched>"] == 3
    assert emulator.counters["PUT <unmatched>"] == 1
    # unauthenticated: 401 first
    assert requests.get(emulator.url + "/v1/nope").status_code == 401


# --------------------------------------------------------------------------- counters


def test_keepalive_session_is_one_connection(emulator: EmulatorServer) -> None:
    emulator.reset_counters()
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer sk-emulator"
        for _ in range(20):
            assert s.get(f"{emulator.base_url}/batches").status_code == 200
    c = emulator.counters
    assert c.connections == 1 and c["connections"] == 1
    assert c.requests == 20 and c["requests"] == 20
    assert c["GET /v1/batches"] == 20
    assert c.as_dict()["routes"] == {"GET /v1/batches": 20}


def test_connection_close_counts_each_connection(emulator: EmulatorServer) -> None:
    emulator.reset_counters()
    for _ in range(5):
        r = requests.get(
            f"{emulator.base_url}/batches", headers={"Authorization": "Bearer sk-emulator", "Connection": "close"}
        )
        assert r.status_code == 200
    assert emulator.counters.connections == 5


def test_counters_by_route(emulator: EmulatorServer, session: requests.Session) -> None:
    emulator.reset_counters()
    b = submit(session, emulator, chat_jsonl(1))
    get_batch(session, emulator, b["id"])
    get_batch(session, emulator, b["id"])
    session.post(f"{emulator.base_url}/batches/{b['id']}/cancel")
    c = emulator.counters
    assert c["POST /v1/files"] == 1
    assert c["POST /v1/batches"] == 1
    assert c["GET /v1/batches/{id}"] == 2
    assert c["POST /v1/batches/{id}/cancel"] == 1
    assert c["GET /v1/files"] == 0
    assert c.batches_created == 1 and c.files_uploaded == 1 and c.requests == 5
    emulator.reset_counters()
    assert emulator.counters.as_dict() == {
        "routes": {},
        "requests": 0,
        "connections": 0,
        "batches_created": 0,
        "files_uploaded": 0,
    }


# --------------------------------------------------------------------------- faults


def test_status_fault_times(emulator: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, emulator, chat_jsonl(1))["id"]
    rule = emulator.faults.add("POST /v1/batches", "status", status=503, times=2)
    for _ in range(2):
        r = session.post(
            f"{emulator.base_url}/batches",
            json={"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
        err = assert_error(r, 503, type_="server_error")
        assert err["param"] is None
        assert "Retry-After" not in r.headers
    assert emulator.counters.batches_created == 0
    create(session, emulator, fid)
    assert rule.fired == 2 and rule.seen == 3
    assert emulator.counters.batches_created == 1


def test_429_with_retry_after_headers(emulator: EmulatorServer, session: requests.Session) -> None:
    rule = emulator.faults.add("*", "status", status=429, retry_after=1, retry_after_ms=250, times=1)
    r = session.get(f"{emulator.base_url}/files")
    err = assert_error(r, 429, type_="requests")
    assert err["code"] == "rate_limit_exceeded"
    assert r.headers["Retry-After"] == "1"
    assert r.headers["retry-after-ms"] == "250"
    assert session.get(f"{emulator.base_url}/files").status_code == 200
    assert rule.fired == 1


def test_after_skips_first_matches(emulator: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, emulator, chat_jsonl(1))
    rule = emulator.faults.add("GET /v1/batches/{id}", "status", status=500, after=2, times=1)
    codes = [session.get(f"{emulator.base_url}/batches/{b['id']}").status_code for _ in range(4)]
    assert codes == [200, 200, 500, 200]
    assert rule.fired == 1 and rule.seen == 4
    # other routes are not matched
    assert session.get(f"{emulator.base_url}/batches").status_code == 200
    assert rule.seen == 4


def test_forever_rule_and_clear(emulator: EmulatorServer, session: requests.Session) -> None:
    rule = emulator.faults.add("GET /v1/batches", "status", status=502, times=None)
    for _ in range(5):
        assert_error(session.get(f"{emulator.base_url}/batches"), 502, type_="server_error")
    assert rule.fired == 5
    assert len(emulator.faults) == 1 and list(emulator.faults) == [rule]
    emulator.faults.clear()
    assert len(emulator.faults) == 0
    assert session.get(f"{emulator.base_url}/batches").status_code == 200


def test_rules_apply_in_order(emulator: EmulatorServer, session: requests.Session) -> None:
    a = emulator.faults.add("GET /v1/batches", "status", status=503)
    b = emulator.faults.add("*", "status", status=429, after=1)
    url = f"{emulator.base_url}/batches"
    assert [session.get(url).status_code for _ in range(3)] == [503, 429, 200]
    assert (a.fired, b.fired) == (1, 1)


def test_concrete_path_rule(emulator: EmulatorServer, session: requests.Session) -> None:
    b1 = submit(session, emulator, chat_jsonl(1))
    b2 = submit(session, emulator, chat_jsonl(1))
    rule = emulator.faults.add(f"GET /v1/batches/{b1['id']}", "status", status=500, times=None)
    assert session.get(f"{emulator.base_url}/batches/{b1['id']}").status_code == 500
    assert session.get(f"{emulator.base_url}/batches/{b2['id']}").status_code == 200
    assert rule.fired == 1


def test_latency_fault(emulator: EmulatorServer, session: requests.Session) -> None:
    b = submit(session, emulator, chat_jsonl(1))
    rule = emulator.faults.add("GET /v1/batches/{id}", "latency", latency=0.3, times=1)
    url = f"{emulator.base_url}/batches/{b['id']}"
    t = time.monotonic()
    assert session.get(url).status_code == 200
    assert time.monotonic() - t >= 0.3
    t = time.monotonic()
    assert session.get(url).status_code == 200
    assert time.monotonic() - t < 0.25
    assert rule.fired == 1
    # latency stacks with a status rule
    emulator.faults.add("*", "latency", latency=0.2)
    emulator.faults.add("*", "status", status=500)
    t = time.monotonic()
    assert session.get(url).status_code == 500
    assert time.monotonic() - t >= 0.2


def test_drop_fault(emulator: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, emulator, chat_jsonl(1))["id"]
    rule = emulator.faults.add("POST /v1/batches", "drop")
    emulator.reset_counters()
    with pytest.raises(requests.ConnectionError):
        session.post(
            f"{emulator.base_url}/batches",
            json={"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
    assert rule.fired == 1
    assert emulator.counters.batches_created == 0 and len(emulator.batches) == 0
    create(session, emulator, fid)  # the session reconnects (the dropped one was opened before the reset)
    assert emulator.counters.connections == 1


def test_created_then_error_batch(emulator: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, emulator, chat_jsonl(1))["id"]
    rule = emulator.faults.add("POST /v1/batches", "created_then_error")
    r = session.post(
        f"{emulator.base_url}/batches",
        json={"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert_error(r, 500, type_="server_error")
    assert rule.fired == 1
    assert emulator.counters.batches_created == 1
    [bid] = list(emulator.batches)
    listed = session.get(f"{emulator.base_url}/batches").json()["data"]
    assert [b["id"] for b in listed] == [bid]


def test_created_then_error_file(emulator: EmulatorServer, session: requests.Session) -> None:
    emulator.faults.add("POST /v1/files", "created_then_error")
    r = session.post(f"{emulator.base_url}/files", files={"file": ("a.jsonl", b"{}")}, data={"purpose": "batch"})
    assert_error(r, 500, type_="server_error")
    assert emulator.counters.files_uploaded == 1
    assert len(session.get(f"{emulator.base_url}/files").json()["data"]) == 1


def test_truncated_fault(emulator: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, emulator, chat_jsonl(1))["id"]
    rule = emulator.faults.add("POST /v1/batches", "truncated")
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=5)
    payload = json.dumps({"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    conn.request(
        "POST",
        "/v1/batches",
        body=payload,
        headers={"Authorization": "Bearer sk-emulator", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200
    length = int(resp.getheader("Content-Length") or 0)
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    partial = info.value.partial
    assert 0 < len(partial) < length
    with pytest.raises(ValueError):
        json.loads(partial)
    conn.close()
    assert rule.fired == 1
    assert emulator.counters.batches_created == 1  # the request was executed
    # with requests it surfaces as a connection/chunked error
    emulator.faults.add("GET /v1/batches", "truncated")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        session.get(f"{emulator.base_url}/batches")
    assert session.get(f"{emulator.base_url}/batches").status_code == 200


def test_truncated_file_content(emulator: EmulatorServer, session: requests.Session) -> None:
    content = chat_jsonl(50)
    fid = upload(session, emulator, content)["id"]
    emulator.faults.add("GET /v1/files/{id}/content", "truncated")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        session.get(f"{emulator.base_url}/files/{fid}/content").content  # noqa: B018
    assert session.get(f"{emulator.base_url}/files/{fid}/content").content == content


def test_not_json_fault(emulator: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, emulator, chat_jsonl(1))["id"]
    rule = emulator.faults.add("POST /v1/batches", "not_json")
    r = session.post(
        f"{emulator.base_url}/batches",
        json={"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.text.lstrip().startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError):
        r.json()
    assert rule.fired == 1
    assert emulator.counters.batches_created == 0  # not executed


def test_fault_on_large_upload_keeps_connection_usable(emulator: EmulatorServer, session: requests.Session) -> None:
    emulator.faults.add("POST /v1/files", "status", status=500)
    big = b"x" * (3 * 1024 * 1024)
    r = session.post(f"{emulator.base_url}/files", files={"file": ("a.jsonl", big)}, data={"purpose": "batch"})
    assert r.status_code == 500
    assert upload(session, emulator, big)["bytes"] == len(big)
    assert emulator.counters.connections == 1


def test_invalid_rules() -> None:
    with EmulatorServer() as emu:
        with pytest.raises(ValueError):
            emu.faults.add("*", "explode")
        with pytest.raises(ValueError):
            emu.faults.add("*", "status")
        with pytest.raises(ValueError):
            emu.faults.add("*", "latency")
        with pytest.raises(ValueError):
            emu.faults.add("batches", "drop")
        rule = emu.faults.add("get /openai/v1/batches/", "drop")
        assert rule.route == "GET /v1/batches"


def test_parse_fault_spec() -> None:
    assert parse_fault_spec("POST /v1/batches:status=503:times=2") == (
        "POST /v1/batches",
        "status",
        {"status": 503, "times": 2},
    )
    assert parse_fault_spec("GET /v1/batches/{id}:latency=0.25") == (
        "GET /v1/batches/{id}",
        "latency",
        {"latency": 0.25},
    )
    assert parse_fault_spec("*:status=429:retry_after=1:times=1") == (
        "*",
        "status",
        {"status": 429, "retry_after": 1.0, "times": 1},
    )
    assert parse_fault_spec("POST /v1/files:created_then_error:after=1:times=forever") == (
        "POST /v1/files",
        "created_then_error",
        {"after": 1, "times": None},
    )
    assert parse_fault_spec("*:kind=drop:retry-after-ms=5") == ("*", "drop", {"retry_after_ms": 5.0})
    for bad in ("*", "*:bogus", "*:times=2", "*:status=abc", "*:kind=explode", ":drop"):
        with pytest.raises(ValueError):
            parse_fault_spec(bad)
    with EmulatorServer() as emu:
        rule = emu.faults.add_spec("GET /v1/batches:status=503:times=2:after=1")
        assert (rule.route, rule.kind, rule.status, rule.times, rule.after) == ("GET /v1/batches", "status", 503, 2, 1)
