"""Request-body reading and a small streaming ``multipart/form-data`` parser.

Nothing here holds a whole request body in memory: bodies are read in :data:`CHUNK_SIZE` pieces and
each part's bytes are handed to a sink (a file on disk for uploads, a small capped buffer for fields).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import BinaryIO, Protocol

CHUNK_SIZE = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024


class BodyError(Exception):
    """The request body is malformed (answered with HTTP 400)."""


class BodyReader:
    """Reads a request body from ``rfile`` honouring ``Content-Length`` or chunked transfer-encoding."""

    def __init__(self, rfile: BinaryIO, content_length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self._chunked = chunked
        self._remaining = 0 if chunked else (content_length or 0)
        self._chunk_left = 0
        self._eof = not chunked and self._remaining == 0
        self.bytes_read = 0

    @property
    def complete(self) -> bool:
        return self._eof

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        """Return up to ``size`` bytes; ``b""`` at the end of the body."""
        if self._eof or size <= 0:
            return b""
        if self._chunked:
            data = self._read_chunked(size)
        else:
            data = self._rfile.read(min(size, self._remaining))
            if not data:
                raise BodyError("request body ended before Content-Length bytes were received")
            self._remaining -= len(data)
            if self._remaining == 0:
                self._eof = True
        self.bytes_read += len(data)
        return data

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            if not line:
                raise BodyError("chunked request body ended early")
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError("invalid chunk size in chunked request body") from None
            if self._chunk_left == 0:
                # trailers until an empty line
                while True:
                    trailer = self._rfile.readline(1024)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self._eof = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise BodyError("chunked request body ended early")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)  # CRLF after the chunk data
        return data

    def read_all(self, limit: int) -> bytes:
        """Read the whole body into memory; raise :class:`BodyError` when it is larger than ``limit``."""
        parts: list[bytes] = []
        total = 0
        while True:
            data = self.read(CHUNK_SIZE)
            if not data:
                if self._eof:
                    break
                continue
            total += len(data)
            if total > limit:
                self.drain()
                raise BodyError(f"request body is larger than {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def drain(self) -> None:
        """Read and discard the rest of the body (keeps a keep-alive connection usable)."""
        while not self._eof:
            self.read(CHUNK_SIZE)


class PartSink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PartHeaders:
    """The interesting bits of a part's headers."""

    def __init__(self, name: str | None, filename: str | None, content_type: str | None) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type


_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:\\.|[^"\\])*"|[^;]*)')


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``form-data; name="file"; filename="a.jsonl"`` into ("form-data", {name:…, filename:…})."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest):
        key = match.group(1).lower()
        raw = match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key.endswith("*"):  # RFC 5987: UTF-8''percent-encoded
            from urllib.parse import unquote

            _charset, _, encoded = raw.partition("''")
            key, raw = key[:-1], unquote(encoded or raw)
        params[key] = raw
    return main.strip().lower(), params


def boundary_from_content_type(content_type: str) -> bytes:
    kind, params = parse_header_params(content_type)
    if kind != "multipart/form-data":
        raise BodyError("Content-Type must be multipart/form-data")
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        raise BodyError("multipart/form-data request without a valid boundary")
    return boundary.encode("latin-1")


def _parse_part_headers(raw: bytes) -> PartHeaders:
    name = filename = content_type = None
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "content-disposition":
            _disp, params = parse_header_params(value.strip())
            name = params.get("name")
            filename = params.get("filename")
        elif key == "content-type":
            content_type = value.strip()
    return PartHeaders(name, filename, content_type)


def parse_multipart(reader: BodyReader, boundary: bytes, sink_for: Callable[[PartHeaders], PartSink]) -> None:
    """Stream every part of a multipart body into the sink ``sink_for(headers)`` returns.

    Memory use is bounded by :data:`CHUNK_SIZE` plus the boundary length, whatever the body size.
    """
    delim = b"--" + boundary
    body_delim = b"\r\n" + delim
    buf = bytearray()

    def fill() -> bool:
        data = reader.read(CHUNK_SIZE)
        if data:
            buf.extend(data)
            return True
        return False

    # Preamble: find the first delimiter (at the very start or after a CRLF).
    while True:
        idx = buf.find(delim)
        if idx != -1:
            if idx == 0 or (idx >= 2 and buf[idx - 2 : idx] == b"\r\n"):
                del buf[: idx + len(delim)]
                break
            del buf[: idx + 1]
            continue
        if len(buf) > len(delim):
            del buf[: len(buf) - len(delim)]
        if not fill():
            raise BodyError("multipart body has no opening boundary")

    while True:
        # After a delimiter: "--" ends the body, CRLF starts a part.
        while len(buf) < 2:
            if not fill():
                raise BodyError("multipart body ended after a boundary")
        if buf[:2] == b"--":
            reader.drain()  # epilogue
            return
        # tolerate transport padding (spaces/tabs) before the CRLF
        while True:
            crlf = buf.find(b"\r\n")
            if crlf != -1:
                break
            if len(buf) > 1024 or not fill():
                raise BodyError("malformed multipart boundary line")
        if buf[:crlf].strip(b" \t"):
            raise BodyError("malformed multipart boundary line")
        del buf[: crlf + 2]

        # Part headers
        while True:
            end = buf.find(b"\r\n\r\n")
            if end != -1:
                break
            if buf.startswith(b"\r\n"):  # a part with no headers
                end = -2
                break
            if len(buf) > MAX_PART_HEADER_BYTES:
                raise BodyError("multipart part headers too large")
            if not fill():
                raise BodyError("multipart body ended inside part headers")
        headers = _parse_part_headers(bytes(buf[:end])) if end >= 0 else PartHeaders(None, None, None)
        del buf[: end + 4]

        sink = sink_for(headers)
        try:
            # Part data up to CRLF--boundary
            keep = len(body_delim) - 1
            search_from = 0
            while True:
                idx = buf.find(body_delim, search_from)
                if idx != -1:
                    if idx:
                        sink.write(bytes(buf[:idx]))
                    del buf[: idx + len(body_delim)]
                    break
                if len(buf) > keep:
                    cut = len(buf) - keep
                    sink.write(bytes(buf[:cut]))
                    del buf[:cut]
                search_from = 0
                if not fill():
                    raise BodyError("multipart body ended inside a part (no closing boundary)")
        finally:
            sink.close()
