"""Streaming a file's content down, in constant memory, through the synchronous transport."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from airflow_provider_openai_batch.exceptions import InvalidResponseError, redact
from airflow_provider_openai_batch.hooks._errors import transport_error
from airflow_provider_openai_batch.hooks._request import ApiRequest
from airflow_provider_openai_batch.hooks._transport import RetryState, SyncTransport, bounded_body
from airflow_provider_openai_batch.hooks.validation import path_id

if TYPE_CHECKING:
    import requests

__all__ = ["FileContent"]

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 1024 * 1024


class FileContent:
    """The content of one file (``GET /files/{id}/content``), streamed.

    :param transport: the synchronous transport to fetch it with.
    :param file_id: the file.
    """

    def __init__(self, transport: SyncTransport, file_id: str) -> None:
        self.transport = transport
        self.file_id = file_id
        self.request = ApiRequest(
            "GET", f"/files/{path_id('file_id', file_id)}/content", stream=True, accept="application/binary"
        )

    @contextlib.contextmanager
    def open(self) -> Iterator[requests.Response]:
        """The streamed response; a gateway's HTML error page answered with 200 is an error, not content."""
        response = self.transport.send(self.request)
        if response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/html":
            # File content is JSONL or binary, never a web page: this is a proxy's or gateway's error page
            # answered with 200. Saving it as the file would hand the next task garbage.
            secrets = (self.transport.settings.api_key,)
            snippet = redact(bounded_body(response)[:200].decode("utf-8", errors="replace"), secrets)
            raise InvalidResponseError(
                f"expected the content of {self.file_id}, got an HTML page (a proxy or gateway error page?) "
                f"starting {snippet!r}",
                status_code=response.status_code,
                request_id=response.headers.get("x-request-id"),
                method=self.request.method,
                path=self.request.path,
            )
        try:
            yield response
        finally:
            response.close()

    def download(self, destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """Write the content to a path (atomically) or a binary file object; return the bytes written.

        A dropped transfer is restarted from the start, within the call's retry budget, when what was written
        can be taken back (a path, or a seekable file object).
        """
        import requests

        state = RetryState(self.request, self.transport.settings)  # the restarts of one download share one budget
        while True:
            try:
                if isinstance(destination, (str, os.PathLike)):
                    return self._to_path(Path(destination))
                start = destination.tell() if destination.seekable() else None
                try:
                    return self._copy(destination)
                except requests.RequestException as exc:
                    if start is None:
                        # What was written cannot be taken back: a restart would write those bytes twice.
                        raise transport_error(self.request, "read", exc, state.attempts) from None
                    destination.seek(start)
                    destination.truncate()
                    raise
            except (requests.RequestException, InvalidResponseError) as exc:
                delay = state.delay_after_failure("read")
                if delay is None:
                    if isinstance(exc, InvalidResponseError):
                        raise
                    raise transport_error(self.request, "read", exc, state.attempts) from None
                log.warning(
                    "Download of %s broke off (%s); restarting in %.1fs", self.file_id, type(exc).__name__, delay
                )
                time.sleep(delay)

    def lines(self) -> Iterator[str]:
        """The lines of a text file; blank lines are kept so that line numbers stay true.

        :raises ValueError: for a line that is not UTF-8, naming it.
        """
        with self.open() as response:
            for number, raw in enumerate(response.iter_lines(chunk_size=DOWNLOAD_CHUNK), start=1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{self.file_id} line {number} is not UTF-8: {exc}") from None

    def _to_path(self, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.part")
        # Created as open() creates files (0666 less the umask), not 0600 as mkstemp does: the results are for
        # the next task, which may run as another user of the same group.
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                written = self._copy(out)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return written

    def _copy(self, out: IO[bytes]) -> int:
        written = 0
        with self.open() as response:
            for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK):
                out.write(chunk)
                written += len(chunk)
        log.info("Downloaded %s: %d bytes", self.file_id, written)
        return written
