"""Files API of the emulator: upload, list, retrieve, content, delete, validation."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_openai_batch.emulator import EmulatorServer, ManualClock
from tests._kit.emulator_calls import (
    assert_error,
    assert_file_object,
    chat_jsonl,
    chat_line,
    content_lines,
    get_batch,
    jsonl,
    submit,
    upload,
)


def test_upload_returns_full_file_object(mc: EmulatorServer, session: requests.Session) -> None:
    content = chat_jsonl(3)
    r = session.post(f"{mc.base_url}/files", files={"file": ("my input.jsonl", content)}, data={"purpose": "batch"})
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Content-Length"]) == len(r.content)
    obj = r.json()
    assert_file_object(obj)
    now = int(mc.clock.now())
    assert obj == {
        "id": obj["id"],
        "object": "file",
        "bytes": len(content),
        "created_at": now,
        "expires_at": now + 30 * 86400,  # batch files expire after 30 days by default
        "filename": "my input.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }
    assert mc.counters["files_uploaded"] == 1
    assert mc.files[obj["id"]] == obj


def test_non_batch_purposes_have_no_expiry_and_any_name(mc: EmulatorServer, session: requests.Session) -> None:
    for purpose in ("assistants", "fine-tune", "vision", "user_data", "evals"):
        obj = upload(session, mc, b"data", filename="notes.txt", purpose=purpose)
        assert_file_object(obj)
        assert obj["purpose"] == purpose
        assert obj["expires_at"] is None
        assert obj["bytes"] == 4


def test_expires_after_bracket_and_dotted_forms(mc: EmulatorServer, session: requests.Session) -> None:
    now = int(mc.clock.now())
    a = upload(session, mc, b"{}\n", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    assert a["expires_at"] == now + 3600
    b = upload(session, mc, b"{}\n", **{"expires_after.anchor": "created_at", "expires_after.seconds": "2592000"})
    assert b["expires_at"] == now + 2592000


def test_expires_after_invalid(mc: EmulatorServer, session: requests.Session) -> None:
    url = f"{mc.base_url}/files"
    cases = [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "now", "expires_after[seconds]": "3600"}, "expires_after.anchor"),
        ({"expires_after[seconds]": "3600"}, "expires_after.anchor"),
    ]
    for fields, param in cases:
        r = session.post(url, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "batch", **fields})
        assert assert_error(r, 400)["param"] == param
    assert mc.counters["files_uploaded"] == 0


def test_upload_validation_errors(mc: EmulatorServer, session: requests.Session) -> None:
    url = f"{mc.base_url}/files"
    err = assert_error(session.post(url, files={"file": ("a.jsonl", b"x")}, data={"purpose": "nope"}), 400)
    assert err["param"] == "purpose" and err["code"] == "invalid_value"
    err = assert_error(session.post(url, files={"file": ("a.jsonl", b"x")}), 400)
    assert err["param"] == "purpose" and err["code"] == "missing_required_parameter"
    err = assert_error(session.post(url, files={"other": ("a.jsonl", b"x")}, data={"purpose": "batch"}), 400)
    assert err["param"] == "file" and err["code"] == "missing_required_parameter"
    err = assert_error(session.post(url, files={"file": ("a.csv", b"x")}, data={"purpose": "batch"}), 400)
    assert err["param"] == "file" and ".jsonl" in err["message"]
    err = assert_error(session.post(url, data=b"not multipart", headers={"Content-Type": "text/plain"}), 400)
    err = assert_error(
        session.post(
            url,
            data=b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbat',
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        ),
        400,
    )
    assert "multipart" in err["message"]
    assert mc.counters["files_uploaded"] == 0
    # the connection is still usable after errors
    assert session.get(url).status_code == 200


def test_upload_size_limit_boundary(session: requests.Session) -> None:
    with EmulatorServer(max_batch_file_bytes=1000) as emu:
        ok = upload(session, emu, b"x" * 1000)
        assert ok["bytes"] == 1000
        r = session.post(f"{emu.base_url}/files", files={"file": ("a.jsonl", b"x" * 1001)}, data={"purpose": "batch"})
        err = assert_error(r, 400)
        assert err["param"] == "file" and err["code"] == "file_too_large"
        # purpose after the file part: same result
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
            + b"x" * 1001
            + b'\r\n--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b--\r\n'
        )
        r = session.post(
            f"{emu.base_url}/files", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert assert_error(r, 400)["code"] == "file_too_large"
        # other purposes are not bound by the batch limit
        assert upload(session, emu, b"x" * 1001, filename="a.bin", purpose="user_data")["bytes"] == 1001
        assert len(list((emu.data_dir / "tmp").iterdir())) == 0


def test_multipart_parser_edge_cases(mc: EmulatorServer, session: requests.Session) -> None:
    """Binary content that contains CRLF, dashes and the boundary prefix survives intact."""
    boundary = "----emuBoundary42"
    payload = b"\r\n--" + boundary.encode()[:-1] + b"\r\n--\r\n\r\n" + bytes(range(256)) * 300 + b"\r\n-"
    body = (
        b"preamble\r\n--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="we\\"ird.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--" + boundary.encode() + b"--\r\nepilogue"
    )
    r = session.post(
        f"{mc.base_url}/files", data=body, headers={"Content-Type": f'multipart/form-data; boundary="{boundary}"'}
    )
    assert r.status_code == 200, r.text
    obj = r.json()
    assert obj["filename"] == 'we"ird.bin'
    assert obj["bytes"] == len(payload)
    assert session.get(f"{mc.base_url}/files/{obj['id']}/content").content == payload


def test_chunked_upload(mc: EmulatorServer, session: requests.Session) -> None:
    boundary = "cb"
    body = (
        b'--cb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--cb\r\nContent-Disposition: form-data; name="file"; filename="c.jsonl"\r\n\r\n'
        + chat_jsonl(2)
        + b"\r\n--cb--\r\n"
    )

    def gen() -> Iterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    r = session.post(
        f"{mc.base_url}/files", data=gen(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == len(chat_jsonl(2))


def test_retrieve_content_delete(mc: EmulatorServer, session: requests.Session) -> None:
    content = chat_jsonl(2)
    obj = upload(session, mc, content)
    url = f"{mc.base_url}/files/{obj['id']}"
    got = session.get(url)
    assert got.status_code == 200 and got.json() == obj
    c = session.get(url + "/content")
    assert c.status_code == 200
    assert c.content == content
    assert c.headers["Content-Type"] == "application/octet-stream"
    assert int(c.headers["Content-Length"]) == len(content)
    assert c.headers["x-request-id"].startswith("req_")
    d = session.delete(url)
    assert d.status_code == 200
    assert d.json() == {"id": obj["id"], "object": "file", "deleted": True}
    for r in (session.get(url), session.get(url + "/content"), session.delete(url)):
        err = assert_error(r, 404)
        assert err["message"] == f"No such File object: {obj['id']}"


def test_list_files_order_purpose_pagination() -> None:
    clock = ManualClock()
    with EmulatorServer(clock=clock) as emu, requests.Session() as s:
        s.headers["Authorization"] = "Bearer sk-emulator"
        ids = []
        for i in range(5):
            ids.append(upload(s, emu, b"{}\n", purpose="batch" if i % 2 == 0 else "user_data")["id"])
            clock.advance(1)
        url = f"{emu.base_url}/files"
        page = s.get(url).json()
        assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
        assert page["object"] == "list" and page["has_more"] is False
        assert [f["id"] for f in page["data"]] == ids[::-1]  # default order desc
        assert page["first_id"] == ids[-1] and page["last_id"] == ids[0]
        for f in page["data"]:
            assert_file_object(f)
        asc = s.get(url, params={"order": "asc"}).json()
        assert [f["id"] for f in asc["data"]] == ids
        batch_only = s.get(url, params={"purpose": "batch"}).json()
        assert [f["id"] for f in batch_only["data"]] == [ids[4], ids[2], ids[0]]
        p1 = s.get(url, params={"limit": 2}).json()
        assert [f["id"] for f in p1["data"]] == [ids[4], ids[3]] and p1["has_more"] is True
        p2 = s.get(url, params={"limit": 2, "after": p1["last_id"]}).json()
        assert [f["id"] for f in p2["data"]] == [ids[2], ids[1]] and p2["has_more"] is True
        p3 = s.get(url, params={"limit": 2, "after": p2["last_id"]}).json()
        assert [f["id"] for f in p3["data"]] == [ids[0]] and p3["has_more"] is False
        empty = s.get(url, params={"purpose": "evals"}).json()
        assert empty == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}
        for bad in ("0", "10001", "x"):
            assert assert_error(s.get(url, params={"limit": bad}), 400)["param"] == "limit"
        assert s.get(url, params={"limit": "10000"}).status_code == 200
        assert assert_error(s.get(url, params={"order": "up"}), 400)["param"] == "order"


def test_azure_layout_and_api_version(mc: EmulatorServer, session: requests.Session) -> None:
    root = mc.url
    r = requests.post(
        f"{root}/openai/v1/files?api-version=preview",
        files={"file": ("a.jsonl", chat_jsonl(1))},
        data={"purpose": "batch"},
        headers={"api-key": "sk-emulator"},
    )
    assert r.status_code == 200, r.text
    fid = r.json()["id"]
    r2 = requests.get(f"{root}/openai/files/{fid}?api-version=2024-10-21", headers={"api-key": "sk-emulator"})
    assert r2.status_code == 200 and r2.json()["id"] == fid
    assert mc.counters["POST /v1/files"] == 1
    assert mc.counters["GET /v1/files/{id}"] == 1


def test_long_ids_as_a_gateway_mints_them(mc: EmulatorServer, session: requests.Session) -> None:
    mc.set_id_length(330)
    batch = submit(session, mc, chat_jsonl(3) + jsonl([chat_line("bad", "x", emulator_fail=True)]))
    mc.clock.advance(40)
    done = get_batch(session, mc, batch["id"])

    ids = [batch["id"], done["input_file_id"], done["output_file_id"], done["error_file_id"]]
    assert [len(i) for i in ids] == [330] * 4 and len(set(ids)) == 4
    assert batch["id"].startswith("batch_") and all(i.startswith("file-") for i in ids[1:])
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)  # URL-safe: a path segment as it is
    assert len(content_lines(session, mc, done["output_file_id"])) == 3
    assert session.get(f"{mc.base_url}/files/{done['error_file_id']}").json()["id"] == done["error_file_id"]
    assert session.delete(f"{mc.base_url}/files/{done['input_file_id']}").json()["deleted"] is True
    # Stored apart from their ids, whose 330 characters no file system takes as a name.
    assert all(len(p.name) <= 64 for p in (mc.data_dir / "files").iterdir())

    mc.set_id_length(None)
    assert len(upload(session, mc, b"{}\n")["id"]) < 32


@pytest.mark.parametrize("length", [31, 4097])
def test_an_id_length_out_of_range_is_refused(mc: EmulatorServer, length: int) -> None:
    with pytest.raises(ValueError, match="32 to 4096"):
        mc.set_id_length(length)
