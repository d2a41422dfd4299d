"""Streaming over a file's lines and counting them, for any binary file object.

Object-storage files (fsspec's buffered files behind ``s3://``, ``gs://``, ``abfs://``) accept
``read(size)`` but not ``readline(limit)``, and a file without newlines must never be loaded whole. So
lines are cut here from fixed-size reads, and a line is never buffered past the caller's byte limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["READ_CHUNK", "STORAGE_BLOCK_SIZE", "LineCounter", "count_lines", "describe_source", "iter_lines"]

#: Block size for object-storage files (fsspec ``block_size``): the most one buffered read or one multipart
#: upload part holds. fsspec's defaults (s3fs: 50 MiB) would hold a typical batch file whole; 5 MiB is S3's
#: smallest multipart part and a multiple of the 256 KiB that GCS wants.
STORAGE_BLOCK_SIZE = 5 * 1024 * 1024
#: Bytes asked of the stream per read: large enough for few calls, small enough for constant memory.
READ_CHUNK = 1024 * 1024


def iter_lines(stream: IO[Any], *, limit: int | None = None, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
    """Yield the raw lines of a stream, newline included, reading only ``read(chunk_size)``.

    :param stream: a binary stream, read from its current position (a text stream is tolerated: its
        text is yielded as the UTF-8 it will be uploaded as).
    :param limit: most bytes the caller will accept in total. Once the lines yielded plus the pending
        partial line pass it, the pending bytes are yielded as they are and iteration ends, so that the
        caller sees the file is too large without the rest ever being held in memory.
    :param chunk_size: bytes per ``read`` call.
    """
    pending = bytearray()
    emitted = 0
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        pending += chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            line = bytes(pending[start : end + 1])
            emitted += len(line)
            start = end + 1
            yield line
        del pending[:start]
        if limit is not None and emitted + len(pending) > limit:
            yield bytes(pending)
            return
    if pending:
        yield bytes(pending)


class LineCounter:
    """Counts the lines of the bytes written through it, as a file's line count (an unterminated last line
    counts), and passes them on to ``target`` when there is one.

    :param target: the binary file the bytes go to; ``None`` only counts.
    """

    def __init__(self, target: IO[bytes] | None = None) -> None:
        self.target = target
        self.newlines = 0
        self.bytes = 0
        self._last = b"\n"

    def write(self, data: bytes) -> int:
        self.newlines += data.count(b"\n")
        self.bytes += len(data)
        if data:
            self._last = data[-1:]
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.bytes

    @property
    def lines(self) -> int:
        """Lines so far: newlines, plus one for a last line without its newline."""
        return self.newlines + (0 if self._last == b"\n" else 1)


def count_lines(path: str | os.PathLike[str], *, chunk_size: int = READ_CHUNK) -> int:
    """Count the lines of a file in constant memory (an unterminated last line counts)."""
    counter = LineCounter()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            counter.write(chunk)
    return counter.lines


def describe_source(source: object) -> tuple[str, str | None]:
    """``(text for messages, path for a summary)`` of a file path or stream."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return str(path), str(path)
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name, name
    return f"<{type(source).__name__}>", None
