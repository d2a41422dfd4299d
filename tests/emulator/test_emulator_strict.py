"""The emulator answers 400 where the service does, per OpenAI's OpenAPI description (issue #12 item 11), so a
DAG developed offline does not fail online."""

from __future__ import annotations

import requests

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests._kit.emulator_calls import assert_error, chat_jsonl, create, upload


def test_endpoint_without_v1_is_refused_on_the_openai_layout(mc: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, mc, chat_jsonl(1))["id"]
    body = {"input_file_id": fid, "endpoint": "/chat/completions", "completion_window": "24h"}
    error = assert_error(session.post(f"{mc.base_url}/batches", json=body), 400)
    assert error["param"] == "endpoint" and "/v1/chat/completions" in error["message"]
    assert len(mc.batches) == 0


def test_azure_layout_accepts_both_endpoint_forms(mc: EmulatorServer) -> None:
    headers = {"api-key": "sk-emulator"}
    files = {"file": ("a.jsonl", chat_jsonl(1))}
    fid = requests.post(f"{mc.url}/openai/v1/files", files=files, data={"purpose": "batch"}, headers=headers).json()
    for endpoint in ("/chat/completions", "/v1/chat/completions"):
        body = {"input_file_id": fid["id"], "endpoint": endpoint, "completion_window": "24h"}
        r = requests.post(f"{mc.url}/openai/v1/batches", json=body, headers=headers)
        assert r.status_code == 200 and r.json()["endpoint"] == endpoint, r.text


def test_output_expires_after_seconds_as_a_string_is_refused(mc: EmulatorServer, session: requests.Session) -> None:
    fid = upload(session, mc, chat_jsonl(1))["id"]
    error = assert_error(
        session.post(
            f"{mc.base_url}/batches",
            json={
                "input_file_id": fid,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "output_expires_after": {"anchor": "created_at", "seconds": "3600"},
            },
        ),
        400,
    )
    assert error["param"] == "output_expires_after.seconds" and error["code"] == "invalid_type"
    ok = create(session, mc, fid, output_expires_after={"anchor": "created_at", "seconds": 3600})
    assert ok["status"] == "validating"


def test_upload_with_an_unknown_field_is_refused(mc: EmulatorServer, session: requests.Session) -> None:
    r = session.post(
        f"{mc.base_url}/files",
        files={"file": ("a.jsonl", chat_jsonl(1))},
        data={"purpose": "batch", "expires_in": "3600"},
    )
    assert assert_error(r, 400)["param"] == "expires_in"
    assert mc.files == {}
    # Form fields are text: the expiry's seconds arrive as a string there, and are accepted.
    fields = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    assert upload(session, mc, chat_jsonl(1), **fields)["expires_at"] is not None


def test_empty_file_page_has_string_ids(mc: EmulatorServer, session: requests.Session) -> None:
    page = session.get(f"{mc.base_url}/files").json()
    assert page == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}
