"""MultipartFileBody: a sized, seekable, streaming multipart/form-data body."""

from __future__ import annotations

import email.parser
import email.policy
import io
import os
from pathlib import Path

import pytest

from airflow_provider_openai_batch.hooks._multipart import MultipartFileBody

CONTENT = b"".join(b'{"custom_id": "r%d", "body": {}}\n' % i for i in range(500))


def make(
    content: bytes = CONTENT, fields: dict[str, str] | None = None, filename: str = "in.jsonl"
) -> MultipartFileBody:
    handle = io.BytesIO(content)
    return MultipartFileBody(
        fields=fields if fields is not None else {"purpose": "batch"},
        file_field="file",
        filename=filename,
        file=handle,
        size=len(content),
    )


def read_all(body: MultipartFileBody, chunk: int) -> bytes:
    out = bytearray()
    while piece := body.read(chunk):
        out += piece
    return bytes(out)


def parse(body: MultipartFileBody, data: bytes) -> email.message.EmailMessage:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {body.content_type}\r\n\r\n".encode() + data
    )
    assert message.is_multipart()
    return message  # type: ignore[return-value]


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096, 10**9])
def test_length_equals_bytes_produced(chunk: int) -> None:
    body = make()
    data = read_all(body, chunk)
    assert len(data) == len(body)
    assert body.tell() == len(body)
    assert body.read(10) == b""


def test_iteration_and_read_all_agree() -> None:
    body = make()
    whole = body.read()
    body.seek(0)
    assert b"".join(body) == whole
    body.seek(0)
    buffer = bytearray(len(whole) + 10)
    assert body.readinto(memoryview(buffer)) == len(whole)
    assert bytes(buffer[: len(whole)]) == whole


def test_parses_with_the_stdlib_email_parser() -> None:
    body = make(fields={"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    message = parse(body, body.read())
    parts = list(message.iter_parts())
    names = [p.get_param("name", header="content-disposition") for p in parts]
    assert names == ["purpose", "expires_after[anchor]", "expires_after[seconds]", "file"]
    assert parts[0].get_payload(decode=True) == b"batch"
    assert parts[2].get_payload(decode=True) == b"3600"
    assert parts[3].get_filename() == "in.jsonl"
    assert parts[3].get_content_type() == "application/octet-stream"
    assert parts[3].get_payload(decode=True) == CONTENT


def test_boundary_is_in_the_content_type_and_not_in_the_data() -> None:
    body = make()
    assert body.content_type == f"multipart/form-data; boundary={body.boundary}"
    assert body.boundary.encode() not in CONTENT
    assert make().boundary != body.boundary


@pytest.mark.parametrize("position", [0, 1, 50, "head_end", "in_file", "file_end", "end"])
def test_seek_then_read_reproduces_the_same_bytes(position: int | str) -> None:
    body = make()
    whole = body.read()
    head = whole.index(CONTENT)
    offsets = {"head_end": head, "in_file": head + 1234, "file_end": head + len(CONTENT), "end": len(whole)}
    offset = offsets.get(position, position)  # type: ignore[call-overload]
    assert body.seek(offset) == offset
    assert body.tell() == offset
    assert read_all(body, 333) == whole[offset:]
    body.seek(0)
    assert read_all(body, 64 * 1024) == whole  # a rewind (retry) sends identical bytes


def test_seek_whence_and_clamping() -> None:
    body = make()
    total = len(body)
    assert body.seek(-10, os.SEEK_END) == total - 10
    assert body.seek(5, os.SEEK_CUR) == total - 5
    assert body.seek(100, os.SEEK_CUR) == total
    assert body.seek(-5, os.SEEK_SET) == 0
    assert body.readable() and body.seekable()


def test_file_object_not_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"SKIP" + CONTENT)
    with path.open("rb") as handle:
        handle.seek(4)
        body = MultipartFileBody(fields={}, file_field="file", filename="x.jsonl", file=handle, size=len(CONTENT))
        first = body.read()
        body.seek(0)
        assert body.read() == first
    parts = list(parse(body, first).iter_parts())
    assert len(parts) == 1
    assert parts[0].get_payload(decode=True) == CONTENT


def test_special_characters_in_names_are_quoted() -> None:
    body = make(filename='we"ird\r\nname.jsonl')
    data = body.read()
    head = data[: data.index(CONTENT)]
    assert b"\r\nname" not in head.split(b"\r\n\r\n")[0]
    assert b'filename="we%22ird%0D%0Aname.jsonl"' in head


def test_empty_file() -> None:
    body = make(content=b"")
    data = body.read()
    assert len(data) == len(body)
    assert list(parse(body, data).iter_parts())[-1].get_payload(decode=True) == b""


def test_a_file_that_shrinks_raises() -> None:
    handle = io.BytesIO(b"short")
    body = MultipartFileBody(fields={}, file_field="file", filename="x", file=handle, size=100)
    with pytest.raises(OSError, match="file shrank while uploading"):
        body.read()
