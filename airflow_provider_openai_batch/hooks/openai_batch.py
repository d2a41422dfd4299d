"""OpenAIBatchHook: one short method per Batch and Files API call.

How a call is sent lives elsewhere: :mod:`~airflow_provider_openai_batch.hooks._transport` holds both send
loops (``requests`` for the worker, ``httpx`` for the triggerer) and their one retry policy,
:mod:`~airflow_provider_openai_batch.hooks._errors` the one error mapping,
:mod:`~airflow_provider_openai_batch.hooks._create_once` the rule that a create makes at most one object, and
:mod:`~airflow_provider_openai_batch.hooks.validation` the argument checks shared with the operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from airflow.sdk import BaseHook

from airflow_provider_openai_batch.exceptions import ConflictError
from airflow_provider_openai_batch.get_provider_info import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_openai_batch.hooks._content import FileContent
from airflow_provider_openai_batch.hooks._create_once import CreateOnce
from airflow_provider_openai_batch.hooks._multipart import MultipartFileBody
from airflow_provider_openai_batch.hooks._request import ApiRequest
from airflow_provider_openai_batch.hooks._settings import ConnectionSettings
from airflow_provider_openai_batch.hooks._transport import (
    AsyncTransport,
    RetryPolicy,
    SyncTransport,
    new_async_client,
    new_session,
)
from airflow_provider_openai_batch.hooks.validation import (
    IDEMPOTENCY_METADATA_KEY,
    MAX_METADATA_PAIRS,
    check_id,
    path_id,
    validate_create_args,
)
from airflow_provider_openai_batch.models import Batch, BatchPage, BatchStatus, DeletedFile, FileObject

if TYPE_CHECKING:
    import httpx
    import requests

    from airflow_provider_openai_batch.batch_input import BatchResult

__all__ = ["IDEMPOTENCY_METADATA_KEY", "OpenAIBatchHook"]

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 1024 * 1024


class OpenAIBatchHook(BaseHook):
    """Talks to the OpenAI Batch and Files API (or Azure OpenAI, or a compatible gateway).

    Nothing is read or opened in ``__init__``: the connection is looked up on first use. The ``a``-prefixed
    twins, for the triggerer, never block the event loop.

    :param conn_id: Airflow connection id. An ``openai`` connection made for the official provider works
        too: API key in Password, base URL in Host.
    :param timeout: read timeout in seconds, overriding the connection's ``timeout`` extra.
    :param max_retries: retries of a transient failure per call, overriding the connection's extra.
    :param keepalive_expiry: seconds the async client keeps an idle connection open (httpx's default is 5 s);
        a trigger sets it above its poll interval so that polls reuse one connection.
    :param max_connections: TCP connections the async client may hold (all kept alive); the triggers of one
        connection share one hook and send their polls through this bounded pool.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "openai_default"
    conn_type = CONN_TYPE
    hook_name = "OpenAI Batch"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        keepalive_expiry: float | None = None,
        max_connections: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self._keepalive_expiry = keepalive_expiry
        self._max_connections = max_connections
        self._async_settings: ConnectionSettings | None = None
        self._async_client: httpx.AsyncClient | None = None

    # -- Airflow connection form ---------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form labels for Airflow 3.1 (3.2+ reads them from the provider info)."""
        return UI_FIELD_BEHAVIOUR

    @classmethod
    def get_connection_form_fields(cls) -> dict[str, Any]:
        """The extra fields of the form, as declared in the provider info."""
        return CONN_FIELDS

    # -- settings and transports --------------------------------------------------------------------

    def _settings_from(self, conn: Any) -> ConnectionSettings:
        settings = ConnectionSettings.from_connection_fields(
            self.conn_id,
            host=conn.host,
            password=conn.password,
            extra=conn.extra,
            schema=conn.schema,
            port=conn.port,
        )
        return settings.with_overrides(read_timeout=self._timeout, max_retries=self._max_retries)

    @cached_property
    def settings(self) -> ConnectionSettings:
        """Validated connection settings (looked up once, synchronously)."""
        return self._settings_from(self.get_connection(self.conn_id))

    async def aget_settings(self) -> ConnectionSettings:
        """Validated connection settings, looked up without blocking the event loop."""
        if self._async_settings is None:
            try:
                conn = await self.aget_connection(self.conn_id)
            except ImportError:
                # Airflow 3.1.0's async lookup needs a supervisor even for env-var connections; outside a
                # triggerer or task (no supervisor, so no deadlock risk) look up synchronously, off the loop.
                conn = await asyncio.to_thread(self.get_connection, self.conn_id)
            self._async_settings = self._settings_from(conn)
        return self._async_settings

    @cached_property
    def session(self) -> requests.Session:
        """One pooled session per hook, so polling reuses one TCP connection."""
        return new_session(self.settings)

    @cached_property
    def transport(self) -> SyncTransport:
        """The synchronous transport: sends, retries and maps errors."""
        return SyncTransport(self.settings, self.session)

    def get_conn(self) -> requests.Session:
        """The pooled :class:`requests.Session` (Airflow's hook convention)."""
        return self.session

    def close(self) -> None:
        """Close the pooled connections of the synchronous session."""
        self.__dict__.pop("transport", None)
        if "session" in self.__dict__:
            self.__dict__.pop("session").close()

    async def _aclient(self) -> tuple[httpx.AsyncClient, ConnectionSettings]:
        settings = await self.aget_settings()
        if self._async_client is None:
            self._async_client = await new_async_client(
                settings, keepalive_expiry=self._keepalive_expiry, max_connections=self._max_connections
            )
        return self._async_client, settings

    async def _asend_json(self, request: ApiRequest) -> dict[str, Any]:
        client, settings = await self._aclient()
        return await AsyncTransport(settings, client).send_json(request)

    async def aclose(self) -> None:
        """Close the asynchronous client (the trigger calls this when it stops)."""
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            await client.aclose()

    # -- batches -------------------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        output_expires_after: Mapping[str, Any] | int | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Create a batch from an uploaded input file.

        A create is never repeated blindly. With ``idempotency_key`` (which the operators always pass),
        the key is stored in the batch metadata, an existing batch carrying it is reused, and after an
        ambiguous failure (timeout or 5xx after sending) the hook looks the batch up before creating again.

        :param input_file_id: id of a file uploaded with ``purpose="batch"``.
        :param endpoint: e.g. ``/v1/chat/completions``; checked by the server, since the set differs
            between OpenAI, Azure and gateways.
        :param completion_window: ``24h`` on OpenAI; some gateways accept more.
        :param metadata: up to 16 string pairs, echoed on the batch (15 with an ``idempotency_key``).
        :param output_expires_after: seconds (or ``{"anchor", "seconds"}``) after which outputs expire.
        :param idempotency_key: a run-stable key; reuse instead of creating twice.
        :raises ValueError: for arguments the API would reject, before any request.
        """
        check_id("input_file_id", input_file_id)
        tags, expires = validate_create_args(
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            output_expires_after=output_expires_after,
            tagged=idempotency_key is not None,
        )
        # Without a caller's key, a per-call key still lets an ambiguous failure be resolved safely.
        key = idempotency_key
        if key is None and len(tags) < MAX_METADATA_PAIRS:
            key = f"call-{uuid.uuid4().hex}"
        if key is not None:
            tags[IDEMPOTENCY_METADATA_KEY] = key
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if tags:
            body["metadata"] = tags
        if expires is not None:
            body["output_expires_after"] = expires
        if idempotency_key is not None:
            existing = self.find_batch_by_idempotency_key(idempotency_key)
            if existing is not None:
                log.info("Reusing batch %s created earlier for this key instead of creating another", existing.id)
                return existing
        request = ApiRequest("POST", "/batches", json=body, idempotent=False)
        batch = CreateOnce(
            what="batch",
            send=lambda: Batch.from_dict(self.transport.send_json(request)),
            # After a failed attempt the batch, if it exists, is among the newest: one page, not ten, per look.
            find=(lambda: self.find_batch_by_idempotency_key(key, max_scanned=100)) if key else None,
            policy=RetryPolicy.from_settings(self.settings),
            grace=self.settings.read_timeout,
        ).run()
        log.info("Batch %s is %s (endpoint %s)", batch.id, batch.status.value, batch.endpoint)
        return batch

    def retrieve_batch(self, batch_id: str) -> Batch:
        """The batch as it is now."""
        return Batch.from_dict(self.transport.send_json(_batch_request(batch_id)))

    async def aretrieve_batch(self, batch_id: str) -> Batch:
        """Async twin of :meth:`retrieve_batch`, for the trigger."""
        return Batch.from_dict(await self._asend_json(_batch_request(batch_id)))

    def cancel_batch(self, batch_id: str) -> Batch:
        """Ask the service to cancel; returns the batch, normally ``cancelling``.

        A batch that is already finished (HTTP 409) is not an error: it is fetched and returned as is.
        """
        try:
            return Batch.from_dict(self.transport.send_json(_cancel_request(batch_id)))
        except ConflictError:
            batch = self.retrieve_batch(batch_id)
            log.info("Batch %s is already %s; nothing to cancel", batch_id, batch.status.value)
            return batch

    async def acancel_batch(self, batch_id: str) -> Batch:
        """Async twin of :meth:`cancel_batch`, for the trigger's ``on_kill``."""
        try:
            return Batch.from_dict(await self._asend_json(_cancel_request(batch_id)))
        except ConflictError:
            return await self.aretrieve_batch(batch_id)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> BatchPage:
        """One page of batches, newest first.

        :param after: id of the last batch of the previous page.
        :param limit: 1..100.
        :raises ValueError: for a limit outside 1..100, before any request.
        """
        return BatchPage.from_dict(self.transport.send_json(_list_request(after, limit)))

    async def alist_batches(self, *, after: str | None = None, limit: int = 20) -> BatchPage:
        """Async twin of :meth:`list_batches`, for the triggers' coalesced polling."""
        return BatchPage.from_dict(await self._asend_json(_list_request(after, limit)))

    def iter_batches(
        self, *, after: str | None = None, page_size: int = 100, max_items: int | None = None
    ) -> Iterator[Batch]:
        """Every batch, newest first, following ``has_more``/``after`` across pages.

        :param max_items: stop after this many (``None``: all).
        """
        seen = 0
        while True:
            page = self.list_batches(after=after, limit=page_size)
            for batch in page.data:
                yield batch
                seen += 1
                if max_items is not None and seen >= max_items:
                    return
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    def find_batch_by_idempotency_key(self, key: str, *, max_scanned: int = 1000) -> Batch | None:
        """The newest batch tagged with ``key`` that is running or completed, or ``None``.

        Failed, expired, cancelled and cancelling batches are not reused: running the task again after one
        of those is meant to try again. The API has no metadata filter, so the newest ``max_scanned`` batches are
        scanned (10 requests at most by default).
        """
        for batch in self.iter_batches(max_items=max_scanned):
            if (batch.metadata or {}).get(IDEMPOTENCY_METADATA_KEY) != key:
                continue
            # ``cancelling`` is not terminal, but it can only end ``cancelled``: not worth waiting on either.
            if batch.status is BatchStatus.CANCELLING or (batch.status.is_terminal and not batch.status.is_success):
                log.info("Batch %s carries this key but is %s; not reusing it", batch.id, batch.status.value)
                return None
            return batch
        return None

    # -- files -----------------------------------------------------------------------------------------

    def upload_file(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        purpose: str = "batch",
        filename: str | None = None,
        expires_after_seconds: int | None = None,
    ) -> FileObject:
        """Upload a file, streaming it from disk (or a seekable binary file object) in constant memory.

        If the upload fails after the bytes were sent (timeout or 5xx), the hook looks for a file of the same
        name and size created since the upload began and returns it, instead of leaving a duplicate.

        :param source: a local path or a binary file object positioned at its start.
        :param purpose: ``batch`` for batch inputs.
        :param filename: name announced to the server; defaults to the path's name (must end in ``.jsonl``
            for batch inputs).
        :param expires_after_seconds: optional expiry of the uploaded file.
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
            body = MultipartFileBody(fields=fields, file_field="file", filename=name, file=handle, size=size)
            request = ApiRequest("POST", "/files", idempotent=False)
            began = int(time.time()) - 5

            def find_uploaded() -> FileObject | None:
                for file in self.list_files(purpose=purpose, limit=100):
                    if file.filename == name and file.bytes == size and (file.created_at or 0) >= began:
                        return file
                return None

            uploaded = CreateOnce(
                what="file",
                send=lambda: FileObject.from_dict(self.transport.send_json(request, body=body)),
                find=find_uploaded,
                policy=RetryPolicy.from_settings(self.settings),
                grace=self.settings.read_timeout,
            ).run()
        log.info("Uploaded %s (%d bytes) as %s", name, size, uploaded.id)
        return uploaded

    def list_files(
        self, *, purpose: str | None = None, limit: int = 100, order: str = "desc", after: str | None = None
    ) -> list[FileObject]:
        """One page of files (newest first by default)."""
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}")
        params = {"purpose": purpose, "limit": limit, "order": order, "after": after}
        payload = self.transport.send_json(ApiRequest("GET", "/files", params=params))
        items = payload.get("data")
        return [FileObject.from_dict(item) for item in (items if isinstance(items, list) else [])]

    def retrieve_file(self, file_id: str) -> FileObject:
        """Metadata of one file."""
        return FileObject.from_dict(
            self.transport.send_json(ApiRequest("GET", f"/files/{path_id('file_id', file_id)}"))
        )

    def delete_file(self, file_id: str) -> DeletedFile:
        """Delete a file (used to clean up an input whose batch could not be created)."""
        return DeletedFile.from_dict(
            self.transport.send_json(ApiRequest("DELETE", f"/files/{path_id('file_id', file_id)}"))
        )

    def download_file(self, file_id: str, destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """Stream a file's content to a local path or a binary file object; return the bytes written.

        A path is written to a temporary file beside it and renamed into place when complete (with the
        permissions the umask gives a new file), so a failed download never leaves a truncated file. A dropped
        transfer is restarted (bounded retries).
        """
        return FileContent(self.transport, file_id).download(destination)

    def iter_file_lines(self, file_id: str) -> Iterator[str]:
        """The lines of a text file, streamed; blank lines are kept so that line numbers stay true.

        :raises ValueError: for a line that is not UTF-8, naming it.
        """
        return FileContent(self.transport, file_id).lines()

    def iter_results(self, file_id: str) -> Iterator[BatchResult]:
        """The typed results of an output or error file, streamed straight from the API.

        :raises ValueError: for a malformed line, naming the file and the line number.
        """
        from airflow_provider_openai_batch.batch_input import iter_results

        return iter_results(self.iter_file_lines(file_id), source=file_id)

    # -- connection test ---------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (list one batch); the message says what to fix."""
        try:
            self.list_batches(limit=1)
        except Exception as exc:
            return False, f"Could not list batches at {self._safe_base_url()}: {exc}"
        return True, f"Connected to {self.settings.base_url}: the API key can list batches."

    def _safe_base_url(self) -> str:
        try:
            return self.settings.base_url
        except Exception:
            return "(invalid connection)"


def _batch_request(batch_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/batches/{path_id('batch_id', batch_id)}")


def _cancel_request(batch_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/batches/{path_id('batch_id', batch_id)}/cancel", json={})


def _list_request(after: str | None, limit: int) -> ApiRequest:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ValueError(f"limit must be an integer between 1 and 100, got {limit!r}")
    if after is not None:
        check_id("after", after)
    return ApiRequest("GET", "/batches", params={"after": after, "limit": limit})
