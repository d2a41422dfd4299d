"""A streaming ``multipart/form-data`` body for file uploads.

``requests`` builds multipart bodies in memory; a 200 MB batch input must not be. This body is a
seekable, sized file-like object: ``requests`` sends it with a ``Content-Length`` and reads it in
small chunks, and a retry rewinds it with :meth:`seek`.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartFileBody(io.RawIOBase):
    """``fields`` as form fields followed by one file part streamed from ``file``.

    :param fields: plain text form fields, sent before the file.
    :param file_field: name of the file part (``file`` for the Files API).
    :param filename: file name announced to the server.
    :param file: a binary, seekable file object positioned at its start; not closed here.
    :param size: number of bytes of ``file`` to send.
    """

    def __init__(
        self,
        *,
        fields: Mapping[str, str],
        file_field: str,
        filename: str,
        file: BinaryIO,
        size: int,
        content_type: str = "application/octet-stream",
    ) -> None:
        super().__init__()
        self.boundary = f"----airflow-openai-batch-{uuid.uuid4().hex}"
        self.filename = filename
        self.file_size = size
        head = io.BytesIO()
        for name, value in fields.items():
            head.write(f"--{self.boundary}\r\n".encode())
            head.write(f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode())
            head.write(value.encode("utf-8") + b"\r\n")
        head.write(f"--{self.boundary}\r\n".encode())
        head.write(
            f'Content-Disposition: form-data; name="{_quote(file_field)}"; filename="{_quote(filename)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
        )
        self._head = head.getvalue()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._file = file
        self._file_start = file.tell()
        self._size = size
        self._pos = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: len(self)}[whence]
        self._pos = max(0, min(base + offset, len(self)))
        if len(self._head) <= self._pos < len(self._head) + self._size:
            self._file.seek(self._file_start + self._pos - len(self._head))
        else:
            self._file.seek(self._file_start)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = len(self) - self._pos
        out = bytearray()
        while size > 0 and self._pos < len(self):
            head_end = len(self._head)
            file_end = head_end + self._size
            if self._pos < head_end:
                piece = self._head[self._pos : min(head_end, self._pos + size)]
                if self._pos + len(piece) == head_end:
                    self._file.seek(self._file_start)
            elif self._pos < file_end:
                piece = self._file.read(min(size, file_end - self._pos))
                if not piece:
                    raise OSError(f"file shrank while uploading: {self._pos - head_end} of {self._size} bytes read")
            else:
                start = self._pos - file_end
                piece = self._tail[start : start + size]
            out += piece
            self._pos += len(piece)
            size -= len(piece)
        return bytes(out)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        while chunk := self.read(CHUNK_SIZE):
            yield chunk


@contextlib.contextmanager
def upload_body(
    source: str | os.PathLike[str] | BinaryIO, *, purpose: str, filename: str | None, expires_after_seconds: int | None
) -> Iterator[MultipartFileBody]:
    """The ``POST /files`` body for ``source`` (a path, opened and closed here, or a binary file object).

    :param filename: name announced to the server; defaults to the path's (or file object's) name.
    :param expires_after_seconds: the file's expiry (``expires_after`` anchored at creation), when set.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"Batch input file not found: {path}")
            handle: BinaryIO = stack.enter_context(path.open("rb"))
            name = filename or path.name
        else:
            handle = source
            name = filename or Path(str(getattr(source, "name", "") or "batch_input.jsonl")).name
        start = handle.tell()
        size = handle.seek(0, os.SEEK_END) - start
        handle.seek(start)
        fields = {"purpose": purpose}
        if expires_after_seconds is not None:
            fields["expires_after[anchor]"] = "created_at"
            fields["expires_after[seconds]"] = str(int(expires_after_seconds))
        yield MultipartFileBody(fields=fields, file_field="file", filename=name, file=handle, size=size)
