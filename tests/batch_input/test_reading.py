"""Tests of the streaming line reader and the line counter."""

from __future__ import annotations

import io
from typing import Any

import pytest

from airflow_provider_openai_batch.batch_input import LineCounter, count_lines, iter_lines, validate_batch_input
from airflow_provider_openai_batch.exceptions import BatchInputError
from tests._kit.inputs import good, lines, problems


class ReadOnlyStream(io.RawIOBase):
    """A file like fsspec's buffered files (s3fs, gcsfs, adlfs): ``read(size)`` works, ``readline()`` takes
    no limit. Records the largest read asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest_read = max(self.largest_read, size)
        return self._data.read(size)

    def tell(self) -> int:
        return self._data.tell()

    def readline(self) -> bytes:  # type: ignore[override]
        return self._data.readline()


def test_validation_reads_streams_without_readline_limit() -> None:
    content = lines(*good(3))
    stream = ReadOnlyStream(content)
    summary = validate_batch_input(stream, endpoint="/v1/chat/completions")  # type: ignore[arg-type]
    assert (summary.requests, summary.bytes) == (3, len(content))
    assert 0 < stream.largest_read <= 1024 * 1024


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("end", [b"\n", b"", b"\r\n"])
def test_iter_lines_cuts_lines_whatever_the_chunk_size(chunk_size: int, end: bytes) -> None:
    content = lines(b"first", b"", b"third line", end=end)
    got = list(iter_lines(io.BytesIO(content), chunk_size=chunk_size))
    assert b"".join(got) == content
    assert got == content.splitlines(keepends=True)


def test_iter_lines_stops_buffering_past_the_limit() -> None:
    stream = ReadOnlyStream(b"x" * 10_000_000)  # no newline at all
    got = list(iter_lines(stream, limit=1000, chunk_size=4096))
    assert [len(part) for part in got] == [4096]


def test_a_file_without_newlines_is_too_large_without_being_read_whole() -> None:
    stream = ReadOnlyStream(b"x" * 10_000_000)
    with pytest.raises(BatchInputError) as info:
        validate_batch_input(stream, max_bytes=100_000)  # type: ignore[arg-type]
    assert problems(info.value) == [(None, "file_too_large")]
    assert stream.tell() < 2 * 1024 * 1024


def test_text_stream_is_read_as_utf8() -> None:
    content = lines(*good(2)).decode()
    assert [len(x) for x in iter_lines(io.StringIO(content), chunk_size=5)] == [
        len(x.encode()) for x in content.splitlines(keepends=True)
    ]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [([], 0), ([b""], 0), ([b"a\n"], 1), ([b"a\nb"], 2), ([b"a", b"\nb\n", b"c"], 3), ([b"\n\n"], 2)],
)
def test_line_counter(chunks: list[bytes], expected: int) -> None:
    sink = io.BytesIO()
    counter = LineCounter(sink)
    for chunk in chunks:
        assert counter.write(chunk) == len(chunk)
    assert counter.lines == expected
    assert counter.tell() == counter.bytes == len(sink.getvalue()) == sum(map(len, chunks))


def test_count_lines_of_a_file(tmp_path: Any) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\nb\nc")
    assert count_lines(path, chunk_size=2) == 3
