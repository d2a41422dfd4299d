"""OpenAIBatchHook: one short method per Batch and Files API call.

How a call is sent lives elsewhere: :mod:`~airflow_provider_openai_batch.hooks._transport` holds both send
loops (``requests`` for the worker, ``httpx`` for the triggerer) and their one retry policy,
:mod:`~airflow_provider_openai_batch.hooks._errors` the one error mapping,
:mod:`~airflow_provider_openai_batch.hooks._create_once` the rule that a create makes at most one object, and
:mod:`~airflow_provider_openai_batch.hooks.validation` the argument checks shared with the operators.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from airflow.sdk import BaseHook

from airflow_provider_openai_batch.exceptions import ConflictError, NotFoundError
from airflow_provider_openai_batch.get_provider_info import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_openai_batch.hooks._content import FileContent
from airflow_provider_openai_batch.hooks._create_once import CreateOnce
from airflow_provider_openai_batch.hooks._lookup import newest_tagged, raw_pages, why_not_reusable
from airflow_provider_openai_batch.hooks._multipart import upload_body
from airflow_provider_openai_batch.hooks._request import ApiRequest, cancel_request, list_request, retrieve_request
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
    create_batch_body,
    path_id,
)
from airflow_provider_openai_batch.models import Batch, BatchPage, DeletedFile, FileObject

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
        output_expires_after: Mapping[str, Any] | int | str | None = None,
        idempotency_key: str | None = None,
        not_before: float | None = None,
        look_first: bool = True,
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
        :param not_before: epoch seconds before which no batch with this key can exist: bounds the look-up
            (see :meth:`find_batch_by_idempotency_key`).
        :param look_first: look for a batch with this key before creating; ``False`` when the caller knows
            there is none (a first try, or it just looked itself).
        :raises ValueError: for arguments the API would reject, before any request.
        """
        body, key = create_batch_body(
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            output_expires_after=output_expires_after,
            idempotency_key=idempotency_key,
        )
        if idempotency_key is not None and look_first:
            existing = self.find_batch_by_idempotency_key(idempotency_key, not_before=not_before)
            if existing is not None:
                log.info("Reusing batch %s created earlier for this key instead of creating another", existing.id)
                return existing
        request = ApiRequest("POST", "/batches", json=body, idempotent=False)
        started = time.time()
        batch = CreateOnce(
            what="batch",
            send=lambda: Batch.from_dict(self.transport.send_json(request)),
            # After a failed attempt the batch, if it exists, was created since this call began.
            find=(lambda: self.find_batch_by_idempotency_key(key, not_before=started)) if key else None,
            policy=RetryPolicy.from_settings(self.settings),
            grace=self.settings.read_timeout,
        ).run()
        log.info("Batch %s is %s (endpoint %s)", batch.id, batch.status.value, batch.endpoint)
        return batch

    def retrieve_batch(self, batch_id: str) -> Batch:
        """The batch as it is now."""
        return Batch.from_dict(self.transport.send_json(retrieve_request(batch_id)))

    async def aretrieve_batch(self, batch_id: str) -> Batch:
        """Async twin of :meth:`retrieve_batch`, for the trigger."""
        return Batch.from_dict(await self._asend_json(retrieve_request(batch_id)))

    def cancel_batch(self, batch_id: str) -> Batch:
        """Ask the service to cancel; returns the batch, normally ``cancelling``.

        A batch that is already finished (HTTP 409) is not an error: it is fetched and returned as is.
        """
        try:
            return Batch.from_dict(self.transport.send_json(cancel_request(batch_id)))
        except ConflictError:
            batch = self.retrieve_batch(batch_id)
            log.info("Batch %s is already %s; nothing to cancel", batch_id, batch.status.value)
            return batch

    async def acancel_batch(self, batch_id: str) -> Batch:
        """Async twin of :meth:`cancel_batch`, for the trigger's ``on_kill``."""
        try:
            return Batch.from_dict(await self._asend_json(cancel_request(batch_id)))
        except ConflictError:
            return await self.aretrieve_batch(batch_id)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> BatchPage:
        """One page of batches, newest first.

        :param after: id of the last batch of the previous page.
        :param limit: 1..100.
        :raises ValueError: for a limit outside 1..100, before any request.
        """
        return BatchPage.from_dict(self.transport.send_json(list_request(after, limit)))

    async def alist_batches(self, *, after: str | None = None, limit: int = 20) -> BatchPage:
        """Async twin of :meth:`list_batches`."""
        return BatchPage.from_dict(await self.alist_batches_json(after=after, limit=limit))

    async def alist_batches_json(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        """:meth:`alist_batches` as the API answered it: the triggers' poller parses pages one at a time."""
        return await self._asend_json(list_request(after, limit))

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

    def find_batch_by_idempotency_key(
        self, key: str, *, not_before: float | None = None, max_scanned: int | None = None
    ) -> Batch | None:
        """The newest batch tagged with ``key``, when it can be reused; ``None`` otherwise.

        Reused: a batch still running, or completed with results that still exist. A failed, expired,
        cancelled or cancelling batch, a completed one in which every request failed, or one whose output file
        is gone is passed over (logged, with the reason): running the task again is meant to try again.

        :param not_before: epoch seconds before which no batch with this key can have been created; pages are
            read newest first until a batch older than that (less a clock skew allowance), so the look-up holds
            however many batches the project creates. The operators always pass it.
        :param max_scanned: stop after this many batches; when neither bound is given, the newest 1,000.
        """
        if not_before is None and max_scanned is None:
            max_scanned = 1000
        batch = newest_tagged(
            raw_pages(lambda after: self.transport.send_json(list_request(after, 100))),
            key,
            not_before=not_before,
            max_scanned=max_scanned,
        )
        if batch is None:
            return None
        reason = why_not_reusable(batch, self._file_if_exists)
        if reason is not None:
            log.info("Batch %s carries this task's key but %s; not reusing it", batch.id, reason)
            return None
        return batch

    def _file_if_exists(self, file_id: str) -> FileObject | None:
        try:
            return self.retrieve_file(file_id)
        except NotFoundError:
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
        with upload_body(
            source, purpose=purpose, filename=filename, expires_after_seconds=expires_after_seconds
        ) as body:
            name, size = body.filename, body.file_size
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
