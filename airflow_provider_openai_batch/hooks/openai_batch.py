"""OpenAIBatchHook: every Batch and Files API call, with auth, timeouts, retries and streaming.

The synchronous methods use one pooled :class:`requests.Session` per hook (keep-alive). The ``a``-prefixed
twins that the trigger needs use one :class:`httpx.AsyncClient` per hook and never block the event loop:
connection lookup is asynchronous and waits are ``asyncio.sleep``. Both paths describe calls with the same
:class:`~airflow_provider_openai_batch.hooks._transport.ApiRequest`, retry with the same
:class:`~airflow_provider_openai_batch.hooks._transport.RetryState` and map errors with the same
:func:`~airflow_provider_openai_batch.hooks._transport.api_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_openai_batch.exceptions import (
    APITimeoutError,
    ConflictError,
    InvalidResponseError,
    OpenAIBatchAPIError,
    ServerError,
    redact,
)
from airflow_provider_openai_batch.get_provider_info import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_openai_batch.hooks._multipart import MultipartFileBody
from airflow_provider_openai_batch.hooks._transport import (
    MAX_ERROR_BODY,
    ApiRequest,
    ConnectionSettings,
    RetryState,
    TransportFailure,
    is_ambiguous,
    transport_error,
)
from airflow_provider_openai_batch.models import Batch, BatchPage, BatchStatus, DeletedFile, FileObject

if TYPE_CHECKING:
    import httpx
    import requests

    from airflow_provider_openai_batch.batch_input import BatchResult

__all__ = ["IDEMPOTENCY_METADATA_KEY", "OpenAIBatchHook"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Batch metadata key under which a run-stable idempotency key is stored.
IDEMPOTENCY_METADATA_KEY = "airflow_idempotency_key"
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
DOWNLOAD_CHUNK = 1024 * 1024
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-.:]{1,256}$")


def _check_id(kind: str, value: object) -> str:
    """Reject an empty or malformed object id before it is put into a URL path."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if not _ID_PATTERN.match(value):
        raise ValueError(
            f"{kind} {value!r} is malformed: expected letters, digits, '_', '-', '.' or ':' "
            "(e.g. 'batch_abc123' / 'file-abc123')"
        )
    return value


def validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Check batch metadata against the API's limits before anything is sent.

    :raises ValueError: naming the offending key.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping of strings, got {type(metadata).__name__}")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"metadata has {len(metadata)} pairs; the API allows at most {MAX_METADATA_PAIRS}")
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys must be non-empty strings, got {key!r}")
        if len(key) > MAX_METADATA_KEY:
            raise ValueError(f"metadata key {key[:20]!r}... is {len(key)} chars; at most {MAX_METADATA_KEY}")
        if not isinstance(value, str):
            raise ValueError(f"metadata value of {key!r} must be a string, got {type(value).__name__}")
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata value of {key!r} is {len(value)} chars; at most {MAX_METADATA_VALUE}")
        clean[key] = value
    return clean


def validate_output_expires_after(value: Mapping[str, Any] | int | None) -> dict[str, Any] | None:
    """Accept ``{"anchor": "created_at", "seconds": N}`` or a plain number of seconds.

    :raises ValueError: when the shape is wrong. The seconds range is left to the server, which
        differs between OpenAI (1 h - 30 d) and Azure (14 d - 30 d).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("output_expires_after must be seconds or {'anchor': 'created_at', 'seconds': N}")
    if isinstance(value, int):
        value = {"anchor": "created_at", "seconds": value}
    if not isinstance(value, Mapping) or set(value) - {"anchor", "seconds"}:
        raise ValueError("output_expires_after must be seconds or {'anchor': 'created_at', 'seconds': N}")
    seconds = value.get("seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
        raise ValueError(f"output_expires_after.seconds must be a positive integer, got {seconds!r}")
    return {"anchor": value.get("anchor", "created_at"), "seconds": seconds}


class OpenAIBatchHook(BaseHook):
    """Talks to the OpenAI Batch and Files API (or Azure OpenAI, or a compatible gateway).

    Nothing is read or opened in ``__init__``: the connection is looked up on first use.

    :param conn_id: Airflow connection id. An ``openai`` connection made for the official provider works
        too: API key in Password, base URL in Host.
    :param timeout: read timeout in seconds, overriding the connection's ``timeout`` extra.
    :param max_retries: retries of a transient failure per call, overriding the connection's extra.
    :param keepalive_expiry: seconds the async client keeps an idle connection open (httpx's default is 5 s);
        a trigger sets it above its poll interval so that polls reuse one connection.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self._keepalive_expiry = keepalive_expiry
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

    # -- settings and clients ------------------------------------------------------------------

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
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # Retries are decided per call by RetryState (creates must not be repeated blindly).
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = self.settings.verify_ssl
        session.trust_env = True
        return session

    def get_conn(self) -> requests.Session:
        """The pooled :class:`requests.Session` (Airflow's hook convention)."""
        return self.session

    def close(self) -> None:
        """Close the pooled connections of the synchronous session."""
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    async def _aclient(self) -> tuple[httpx.AsyncClient, ConnectionSettings]:
        settings = await self.aget_settings()
        if self._async_client is None:
            tls = _TLS_CONTEXTS.get(settings.verify_ssl)
            if tls is None:
                # Loading the CA bundle takes 20-90 ms: do it once per process, off the event loop.
                tls = await asyncio.to_thread(_tls_context, settings.verify_ssl)
            import httpx

            self._async_client = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
                verify=tls,
                limits=httpx.Limits(
                    max_connections=4,
                    max_keepalive_connections=2,
                    keepalive_expiry=self._keepalive_expiry if self._keepalive_expiry is not None else 5.0,
                ),
                follow_redirects=False,
            )
        return self._async_client, settings

    async def aclose(self) -> None:
        """Close the asynchronous client (the trigger calls this when it stops)."""
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            await client.aclose()

    # -- the synchronous transport ---------------------------------------------------------------

    def _send(
        self, request: ApiRequest, *, body: MultipartFileBody | None = None, state: RetryState | None = None
    ) -> requests.Response:
        """Send with timeouts and retries; return a successful response or raise a typed error.

        :param state: the call's retry budget, when the caller shares it across several sends.
        """
        import requests

        settings = self.settings
        state = state or RetryState(request, settings)
        headers = {**settings.headers(), "Accept": request.accept}
        if body is not None:
            headers["Content-Type"] = body.content_type
        started = time.monotonic()
        while True:
            if body is not None:
                body.seek(0)
            try:
                response = self.session.request(
                    request.method,
                    settings.url(request.path),
                    params=settings.query(request.params),
                    json=request.json,
                    data=body,
                    headers=headers,
                    timeout=(settings.connect_timeout, settings.read_timeout),
                    # Per request: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's
                    # verify=False (psf/requests#3829), which would ignore an explicit verify_ssl=false.
                    verify=settings.verify_ssl,
                    stream=request.stream,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                time.sleep(state.after_failure(_requests_failure_kind(exc), exc))
                continue
            if response.status_code >= 400:
                # Read (bounded) and closed: the retry decision needs the error code.
                time.sleep(state.after_status(response.status_code, response.headers, _bounded_body(response)))
                continue
            log.debug(
                "%s %s -> %s in %.0f ms (request id %s)",
                request.method,
                request.path,
                response.status_code,
                1000 * (time.monotonic() - started),
                response.headers.get("x-request-id"),
            )
            return response

    def _json(self, request: ApiRequest, *, body: MultipartFileBody | None = None) -> dict[str, Any]:
        """One call whose answer is a JSON object; a truncated or non-JSON body is fetched again."""
        state = RetryState(request, self.settings)
        while True:
            response = self._send(request, body=body, state=state)
            payload = state.decode(response.status_code, response.headers, response.content)
            if isinstance(payload, dict):
                return payload
            time.sleep(payload)

    # -- the asynchronous transport --------------------------------------------------------------

    async def _asend_json(self, request: ApiRequest) -> dict[str, Any]:
        """Async twin of :meth:`_json`: same request, retry and error code; waits never block the loop."""
        import httpx

        client, settings = await self._aclient()
        state = RetryState(request, settings)
        headers = {**settings.headers(), "Accept": request.accept}
        while True:
            try:
                response = await client.request(
                    request.method,
                    settings.url(request.path),
                    params=settings.query(request.params),
                    json=request.json,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                await asyncio.sleep(state.after_failure(_httpx_failure_kind(exc), exc))
                continue
            # The body is read and the stream closed. httpx keeps the response and its stream in a reference
            # cycle (~40 objects a request) that only the cyclic collector frees; with hundreds of triggers the
            # cycles outlive young collections and each full collection of the triggerer's heap stalls the loop
            # for 100+ ms. Unlinking the spent stream lets reference counting free the request at once.
            response.stream = httpx.ByteStream(b"")
            if response.status_code >= 400:
                await asyncio.sleep(
                    state.after_status(response.status_code, response.headers, response.content[:MAX_ERROR_BODY])
                )
                continue
            payload = state.decode(response.status_code, response.headers, response.content)
            if isinstance(payload, dict):
                return payload
            await asyncio.sleep(payload)

    # -- batches -----------------------------------------------------------------------------------

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
        :param metadata: up to 16 string pairs, echoed on the batch.
        :param output_expires_after: seconds (or ``{"anchor", "seconds"}``) after which outputs expire.
        :param idempotency_key: a run-stable key; reuse instead of creating twice.
        :raises ValueError: for arguments the API would reject, before any request.
        """
        _check_id("input_file_id", input_file_id)
        if not isinstance(endpoint, str) or not endpoint.startswith("/"):
            raise ValueError(f"endpoint must be an API path such as '/v1/chat/completions', got {endpoint!r}")
        if not isinstance(completion_window, str) or not completion_window.strip():
            raise ValueError(f"completion_window must be a non-empty string such as '24h', got {completion_window!r}")
        tags = dict(metadata or {})
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
        clean_metadata = validate_metadata(tags or None)
        if clean_metadata is not None:
            body["metadata"] = clean_metadata
        expires = validate_output_expires_after(output_expires_after)
        if expires is not None:
            body["output_expires_after"] = expires
        request = ApiRequest("POST", "/batches", json=body, idempotent=False)
        batch = self._create_once(
            request,
            Batch.from_dict,
            find_existing=(lambda: self.find_batch_by_idempotency_key(key)) if key else None,
            # After a failed attempt the batch, if it exists, is among the newest: one page, not ten, per look.
            find_recent=(lambda: self.find_batch_by_idempotency_key(key, max_scanned=100)) if key else None,
            what="batch",
            look_first=idempotency_key is not None,
        )
        log.info("Batch %s is %s (endpoint %s)", batch.id, batch.status.value, batch.endpoint)
        return batch

    def _create_once(
        self,
        request: ApiRequest,
        parse: Callable[[Mapping[str, Any]], T],
        *,
        find_existing: Callable[[], T | None] | None,
        find_recent: Callable[[], T | None] | None = None,
        what: str,
        body: MultipartFileBody | None = None,
        look_first: bool = True,
    ) -> T:
        """POST ``request`` so that at most one object results.

        ``find_existing`` is asked before the first attempt (when ``look_first``) and after every failure that
        may have created the object anyway; only when it finds nothing is the POST sent again, within the
        retry budget. Without ``find_existing`` an ambiguous failure is raised, saying so. ``find_recent``, when
        given, replaces it after a failure: a cheaper look at only what was created lately.
        """
        if find_existing is not None and look_first:
            existing = find_existing()
            if existing is not None:
                log.info("Reusing the %s created earlier for this key instead of creating another", what)
                return existing
        find_existing = find_recent or find_existing
        state = RetryState(ApiRequest("GET", request.path), self.settings)
        while True:
            try:
                return parse(self._json(request, body=body))
            except OpenAIBatchAPIError as exc:
                if not is_ambiguous(exc):
                    raise
                existing = find_existing() if find_existing is not None else None
                if existing is not None:
                    log.warning("%s; the %s was created anyway, reusing it", exc, what)
                    return existing
                if find_existing is not None and _may_still_be_working(exc):
                    # The server had the request but did not answer in time: it may still be creating the
                    # object. Sending again now would race it into a duplicate, so only look, for as long
                    # as the answer itself was allowed to take, and never send again.
                    existing = self._await_late_object(find_existing, what)
                    if existing is not None:
                        log.warning("%s; the %s was created late, reusing it", exc, what)
                        return existing
                    exc.message += (
                        f" (the server may still create the {what}; not sent again, to avoid a duplicate:"
                        " a retry of the task looks for it before creating another)"
                    )
                    exc.args = (exc._render(),)
                    raise
                delay = state.delay_after_failure("read") if find_existing is not None else None
                if delay is None:
                    exc.message += f" (the {what} may have been created; not sent again, to avoid a duplicate)"
                    exc.args = (exc._render(),)
                    raise
                log.warning("%s; no %s was created, sending again in %.1fs", exc, what, delay)
                time.sleep(delay)

    def _await_late_object(self, find_existing: Callable[[], T | None], what: str) -> T | None:
        """Look for an object whose create timed out, for up to one read timeout; ``None`` if it never shows."""
        grace = self.settings.read_timeout
        deadline = time.monotonic() + grace
        step = min(1.0, max(0.05, grace / 10))
        log.warning(
            "The create of a %s timed out; looking for it for up to %.1fs instead of sending again", what, grace
        )
        while time.monotonic() < deadline:
            time.sleep(min(step, max(0.0, deadline - time.monotonic())))
            try:
                existing = find_existing()
            except OpenAIBatchAPIError as exc:
                log.warning("Looking for the %s failed: %s", what, exc)
                continue
            if existing is not None:
                return existing
        return None

    def retrieve_batch(self, batch_id: str) -> Batch:
        """The batch as it is now."""
        return Batch.from_dict(self._json(ApiRequest("GET", f"/batches/{_check_id('batch_id', batch_id)}")))

    async def aretrieve_batch(self, batch_id: str) -> Batch:
        """Async twin of :meth:`retrieve_batch`, for the trigger."""
        request = ApiRequest("GET", f"/batches/{_check_id('batch_id', batch_id)}")
        return Batch.from_dict(await self._asend_json(request))

    def cancel_batch(self, batch_id: str) -> Batch:
        """Ask the service to cancel; returns the batch, normally ``cancelling``.

        A batch that is already finished (HTTP 409) is not an error: it is fetched and returned as is.
        """
        try:
            return Batch.from_dict(self._json(_cancel_request(batch_id)))
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
        return BatchPage.from_dict(self._json(_list_request(after, limit)))

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

    # -- files -------------------------------------------------------------------------------------

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

            uploaded = self._create_once(
                request,
                FileObject.from_dict,
                find_existing=find_uploaded,
                what="file",
                body=body,
                look_first=False,
            )
        log.info("Uploaded %s (%d bytes) as %s", name, size, uploaded.id)
        return uploaded

    def list_files(
        self, *, purpose: str | None = None, limit: int = 100, order: str = "desc", after: str | None = None
    ) -> list[FileObject]:
        """One page of files (newest first by default)."""
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}")
        params = {"purpose": purpose, "limit": limit, "order": order, "after": after}
        payload = self._json(ApiRequest("GET", "/files", params=params))
        items = payload.get("data")
        return [FileObject.from_dict(item) for item in (items if isinstance(items, list) else [])]

    def retrieve_file(self, file_id: str) -> FileObject:
        """Metadata of one file."""
        return FileObject.from_dict(self._json(ApiRequest("GET", f"/files/{_check_id('file_id', file_id)}")))

    def delete_file(self, file_id: str) -> DeletedFile:
        """Delete a file (used to clean up an input whose batch could not be created)."""
        return DeletedFile.from_dict(self._json(ApiRequest("DELETE", f"/files/{_check_id('file_id', file_id)}")))

    @contextlib.contextmanager
    def _open_content(self, file_id: str) -> Iterator[requests.Response]:
        request = ApiRequest(
            "GET", f"/files/{_check_id('file_id', file_id)}/content", stream=True, accept="application/binary"
        )
        response = self._send(request)
        if response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/html":
            # File content is JSONL or binary, never a web page: this is a proxy's or gateway's error page
            # answered with 200. Saving it as the file would hand the next task garbage.
            snippet = redact(_bounded_body(response)[:200].decode("utf-8", errors="replace"), (self.settings.api_key,))
            raise InvalidResponseError(
                f"expected the content of {file_id}, got an HTML page (a proxy or gateway error page?) "
                f"starting {snippet!r}",
                status_code=response.status_code,
                request_id=response.headers.get("x-request-id"),
                method=request.method,
                path=request.path,
            )
        try:
            yield response
        finally:
            response.close()

    def download_file(self, file_id: str, destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """Stream a file's content to a local path or a binary file object; return the bytes written.

        A path is written to a temporary file beside it and renamed into place when complete, so a
        failed download never leaves a truncated file. A dropped transfer is restarted (bounded retries).
        """
        import requests

        request = ApiRequest("GET", f"/files/{file_id}/content")
        state = RetryState(request, self.settings)
        while True:
            try:
                if isinstance(destination, (str, os.PathLike)):
                    return self._download_to_path(file_id, Path(destination))
                start = destination.tell() if destination.seekable() else None
                try:
                    return self._copy_content(file_id, destination)
                except requests.RequestException as exc:
                    if start is None:
                        # What was written cannot be taken back: a restart would write those bytes twice.
                        raise transport_error(request, "read", exc, state.attempts) from None
                    destination.seek(start)
                    destination.truncate()
                    raise
            except (requests.RequestException, InvalidResponseError) as exc:
                delay = state.delay_after_failure("read")
                if delay is None:
                    if isinstance(exc, InvalidResponseError):
                        raise
                    raise transport_error(request, "read", exc, state.attempts) from None
                log.warning("Download of %s broke off (%s); restarting in %.1fs", file_id, type(exc).__name__, delay)
                time.sleep(delay)

    def _download_to_path(self, file_id: str, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                written = self._copy_content(file_id, out)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return written

    def _copy_content(self, file_id: str, out: IO[bytes]) -> int:
        written = 0
        with self._open_content(file_id) as response:
            for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK):
                out.write(chunk)
                written += len(chunk)
        log.info("Downloaded %s: %d bytes", file_id, written)
        return written

    def iter_file_lines(self, file_id: str) -> Iterator[str]:
        """The lines of a text file, streamed; blank lines are kept so that line numbers stay true.

        :raises ValueError: for a line that is not UTF-8, naming it.
        """
        with self._open_content(file_id) as response:
            for number, raw in enumerate(response.iter_lines(chunk_size=DOWNLOAD_CHUNK), start=1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{file_id} line {number} is not UTF-8: {exc}") from None

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


_TLS_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _tls_context(verify: bool) -> ssl.SSLContext:
    """The process-wide TLS context for async clients (verification on unless turned off explicitly)."""
    context = _TLS_CONTEXTS.get(verify)
    if context is None:
        import httpx

        context = httpx.create_ssl_context(verify=verify)
        _TLS_CONTEXTS[verify] = context
    return context


def _cancel_request(batch_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/batches/{_check_id('batch_id', batch_id)}/cancel", json={})


def _list_request(after: str | None, limit: int) -> ApiRequest:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ValueError(f"limit must be an integer between 1 and 100, got {limit!r}")
    if after is not None:
        _check_id("after", after)
    return ApiRequest("GET", "/batches", params={"after": after, "limit": limit})


def _bounded_body(response: requests.Response) -> bytes:
    """At most MAX_ERROR_BODY bytes of an error response (which may be a streamed one)."""
    try:
        if not getattr(response, "_content_consumed", True):  # requests has no public flag
            return response.raw.read(MAX_ERROR_BODY, decode_content=True) or b""
        return response.content[:MAX_ERROR_BODY]
    except Exception:
        return b""
    finally:
        response.close()


def _may_still_be_working(error: OpenAIBatchAPIError) -> bool:
    """Whether a failed create may still be in progress on the server (it timed out rather than failed)."""
    if isinstance(error, APITimeoutError):
        return True
    return isinstance(error, ServerError) and error.status_code in (408, 504)


def _requests_failure_kind(exc: BaseException) -> TransportFailure:
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return "connect"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc.args[0]) if exc.args else ""
        if "NewConnectionError" in text or "NameResolutionError" in text or "Failed to establish" in text:
            return "connect"
        return "read"
    return "read"


def _httpx_failure_kind(exc: BaseException) -> TransportFailure:
    import httpx

    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return "connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "read"
