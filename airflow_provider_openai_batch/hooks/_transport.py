"""Both send loops (sync ``requests``, async ``httpx``) and the one retry policy they share.

A call is an :class:`~airflow_provider_openai_batch.hooks._request.ApiRequest`. Each loop sends it, and after a
failed attempt asks one :class:`RetryState` what to do: wait and send again, or raise the typed error that
:mod:`~airflow_provider_openai_batch.hooks._errors` maps it to. Only the few lines that move bytes differ.

The policy is written out here (the shape of openai-python's ``_should_retry`` / ``_calculate_retry_timeout``:
one loop, one predicate, one delay function) rather than built from ``tenacity``: the decision needs the
failed response (status, ``Retry-After``, ``x-should-retry``, the error code of a 429) and, for a create,
whether the server can have acted, which tenacity's stop/wait/retry callbacks would each have to unpack again
from an outcome object, in two flavours (sync and async). Written out, it is forty lines a reader can check
against the rules below without knowing another library's conventions:

* a call is retried at most ``max_retries`` times;
* a failure to connect is always retried (the server did nothing); a dropped read or a timeout only for a
  call that is safe to repeat;
* statuses 408, 429, 500, 502, 503, 504 are retried for a call that is safe to repeat, and 413 too when the
  server sent a delay hint; a create only on 429 (refused before anything was done). Never a 429
  ``insufficient_quota`` (waiting adds no credit), never when the server says ``x-should-retry: false`` or
  asks for a longer wait than ``max_retry_after``;
* the first retry is immediate, then ``backoff_factor * 2**n`` seconds capped at ``backoff_max``, plus up to
  ``backoff_factor`` of random jitter; a ``Retry-After`` / ``retry-after-ms`` hint is waited at least.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.exceptions import InvalidResponseError
from airflow_provider_openai_batch.hooks._errors import (
    MAX_ERROR_BODY,
    api_error,
    decode_json,
    error_code,
    transport_error,
)
from airflow_provider_openai_batch.hooks._request import ApiRequest, TransportFailure
from airflow_provider_openai_batch.hooks._settings import ConnectionSettings

if TYPE_CHECKING:
    import httpx
    import requests

    from airflow_provider_openai_batch.hooks._multipart import MultipartFileBody

__all__ = [
    "AsyncTransport",
    "FailedAttempt",
    "RetryPolicy",
    "RetryState",
    "SyncTransport",
    "bounded_body",
    "new_async_client",
    "new_session",
    "tls_context",
]

log = logging.getLogger(__name__)

#: Statuses worth repeating for a call that is safe to repeat.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses a call that creates something may repeat: the server refused before doing anything.
SAFE_CREATE_RETRY_STATUSES = frozenset({429})
#: Statuses also repeated (safe calls only) when the server said how long to wait.
HINTED_RETRY_STATUSES = frozenset({413, 429, 503})


@dataclass(frozen=True)
class FailedAttempt:
    """What one failed send produced: an error response, or a transport failure (then ``status`` is ``None``).

    :param status: HTTP status of the error response.
    :param failure: how the send failed when no response arrived.
    :param headers: response headers (delay hints, ``x-should-retry``).
    :param body: the (bounded) error body; only its ``error.code`` is read.
    """

    status: int | None = None
    failure: TransportFailure | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def hint(self) -> float | None:
        """The server's delay hint in seconds, ``None`` when it gave none or an unreadable one."""
        millis = self.headers.get("retry-after-ms")
        if millis:
            try:
                return max(float(millis) / 1000.0, 0.0)
            except ValueError:
                pass
        value = (self.headers.get("retry-after") or "").strip()
        if not value:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError, IndexError):
            return None


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a failed call again, and after how long (the rules are in the module docstring).

    :param max_retries: retries of one call.
    :param backoff_factor: the second retry waits this long; each further one twice as long; also the jitter.
    :param backoff_max: cap of the exponential step.
    :param max_retry_after: longest server hint obeyed; a longer one ends the retries, since waiting that long
        inside one call would hold a worker or a trigger for no reason.
    """

    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0

    @classmethod
    def from_settings(cls, settings: ConnectionSettings) -> RetryPolicy:
        return cls(settings.max_retries, settings.backoff_factor, settings.backoff_max, settings.max_retry_after)

    def should_retry(self, request: ApiRequest, attempt: FailedAttempt, retries_taken: int) -> bool:
        """Whether ``request`` may be sent again after ``attempt`` failed, ``retries_taken`` retries in."""
        if retries_taken >= self.max_retries:
            return False
        if attempt.status is None:
            return attempt.failure == "connect" or request.idempotent
        hint = attempt.hint()
        if hint is not None and hint > self.max_retry_after:
            return False
        if attempt.headers.get("x-should-retry", "").lower() == "false":
            return False
        if attempt.status == 429 and error_code(attempt.body) == "insufficient_quota":
            return False
        if not request.idempotent:
            return attempt.status in SAFE_CREATE_RETRY_STATUSES
        return attempt.status in RETRY_STATUSES or (hint is not None and attempt.status in HINTED_RETRY_STATUSES)

    def retry_delay(self, attempt: FailedAttempt, retries_taken: int) -> float:
        """Seconds to wait before retry number ``retries_taken + 1``."""
        backoff = 0.0
        if retries_taken > 0:
            backoff = min(self.backoff_max, self.backoff_factor * 2**retries_taken) + random.uniform(
                0, self.backoff_factor
            )
        return max(attempt.hint() or 0.0, backoff)


class RetryState:
    """The retry budget of one call, shared by its sends (and by a download's restarts).

    Each ``after_*`` method records one failed attempt and returns the seconds to wait before the next one,
    or raises the typed error when the call should give up. The transports only send and sleep.
    """

    def __init__(self, request: ApiRequest, settings: ConnectionSettings) -> None:
        self.request = request
        self.policy = RetryPolicy.from_settings(settings)
        self.secrets = (settings.api_key,)
        self.attempts = 0

    def next_delay(self, attempt: FailedAttempt) -> float | None:
        """Seconds to wait before sending again, or ``None`` to give up; counts the retry."""
        if not self.policy.should_retry(self.request, attempt, self.attempts):
            return None
        delay = self.policy.retry_delay(attempt, self.attempts)
        self.attempts += 1
        return delay

    def delay_after_status(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> float | None:
        return self.next_delay(FailedAttempt(status=status, headers=headers, body=body))

    def delay_after_failure(self, kind: TransportFailure) -> float | None:
        return self.next_delay(FailedAttempt(failure=kind))

    def after_status(self, status: int, headers: Mapping[str, str], body: bytes) -> float:
        """An error status arrived. :raises OpenAIBatchAPIError: when it is not worth repeating."""
        delay = self.delay_after_status(status, headers, body)
        if delay is None:
            raise api_error(self.request, status, headers, body, secrets=self.secrets)
        self._log_retry(f"HTTP {status} (request id {headers.get('x-request-id')})", delay)
        return delay

    def after_failure(self, kind: TransportFailure, exc: BaseException) -> float:
        """No usable response. :raises APIConnectionError: when the budget is spent or a repeat is unsafe."""
        delay = self.delay_after_failure(kind)
        if delay is None:
            raise transport_error(self.request, kind, exc, self.attempts) from None
        self._log_retry(type(exc).__name__, delay)
        return delay

    def after_unreadable(self, exc: InvalidResponseError) -> float:
        """A success status with a truncated or non-JSON body, read again like a dropped read.

        :raises InvalidResponseError: ``exc``, when it cannot be fetched again.
        """
        delay = self.delay_after_failure("read")
        if delay is None:
            raise exc
        self._log_retry(f"unreadable body ({exc.message[:60]})", delay)
        return delay

    def _log_retry(self, what: str, delay: float) -> None:
        log.warning("%s %s: %s; retry %d in %.1fs", self.request.method, self.request.path, what, self.attempts, delay)


# -- the synchronous transport ---------------------------------------------------------------------------------


def new_session(settings: ConnectionSettings) -> requests.Session:
    """One pooled session (keep-alive); retries are decided per call by :class:`RetryState`, never by urllib3."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = settings.verify_ssl
    session.trust_env = True
    return session


class SyncTransport:
    """Sends calls with ``requests`` through one pooled session.

    :param settings: where to send, how to authenticate, timeouts and retry budget.
    :param session: the session to send with (see :func:`new_session`).
    """

    def __init__(self, settings: ConnectionSettings, session: requests.Session) -> None:
        self.settings = settings
        self.session = session

    def send(self, request: ApiRequest, *, body: MultipartFileBody | None = None) -> requests.Response:
        """Send with timeouts and retries; return a successful response or raise a typed error."""
        return self._send(request, body, RetryState(request, self.settings))

    def send_json(self, request: ApiRequest, *, body: MultipartFileBody | None = None) -> dict[str, Any]:
        """One call whose answer is a JSON object; a truncated or non-JSON body is fetched again."""
        state = RetryState(request, self.settings)
        while True:
            response = self._send(request, body, state)
            try:
                return decode_json(
                    request, response.status_code, response.headers, response.content, secrets=state.secrets
                )
            except InvalidResponseError as exc:
                time.sleep(state.after_unreadable(exc))

    def _send(self, request: ApiRequest, body: MultipartFileBody | None, state: RetryState) -> requests.Response:
        import requests

        settings = self.settings
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
                time.sleep(state.after_failure(requests_failure_kind(exc), exc))
                continue
            if response.status_code >= 400:
                # Read (bounded) and closed: the retry decision needs the error code.
                time.sleep(state.after_status(response.status_code, response.headers, bounded_body(response)))
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


def bounded_body(response: requests.Response) -> bytes:
    """At most MAX_ERROR_BODY bytes of an error response (which may be a streamed one); closes it."""
    try:
        if not getattr(response, "_content_consumed", True):  # requests has no public flag
            return response.raw.read(MAX_ERROR_BODY, decode_content=True) or b""
        return response.content[:MAX_ERROR_BODY]
    except Exception:
        return b""
    finally:
        response.close()


def requests_failure_kind(exc: BaseException) -> TransportFailure:
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


# -- the asynchronous transport --------------------------------------------------------------------------------

_TLS_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def tls_context(verify: bool) -> ssl.SSLContext:
    """The process-wide TLS context for async clients (verification on unless turned off explicitly)."""
    context = _TLS_CONTEXTS.get(verify)
    if context is None:
        import httpx

        context = httpx.create_ssl_context(verify=verify)
        _TLS_CONTEXTS[verify] = context
    return context


async def new_async_client(
    settings: ConnectionSettings, *, keepalive_expiry: float | None = None, max_connections: int | None = None
) -> httpx.AsyncClient:
    """An :class:`httpx.AsyncClient` for ``settings``; the TLS context is loaded off the event loop, once.

    :param keepalive_expiry: seconds an idle connection is kept open (httpx's default is 5 s); a trigger sets it
        above its poll interval so that polls reuse one connection.
    :param max_connections: TCP connections the pool may hold, all kept alive (default 4, 2 kept alive); the
        triggers of one connection share one such pool.
    """
    tls = _TLS_CONTEXTS.get(settings.verify_ssl)
    if tls is None:
        # Loading the CA bundle takes 20-90 ms: do it once per process, off the event loop.
        tls = await asyncio.to_thread(tls_context, settings.verify_ssl)
    import httpx

    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        verify=tls,
        limits=httpx.Limits(
            max_connections=max_connections or 4,
            max_keepalive_connections=max_connections or 2,
            keepalive_expiry=keepalive_expiry if keepalive_expiry is not None else 5.0,
        ),
        follow_redirects=False,
    )


class AsyncTransport:
    """Sends calls with ``httpx``; waits are ``asyncio.sleep``, so the event loop is never blocked.

    The client is given, not owned: several transports (hooks, triggers) may share one client per connection.

    :param settings: where to send, how to authenticate, timeouts and retry budget.
    :param client: the client to send with (see :func:`new_async_client`).
    """

    def __init__(self, settings: ConnectionSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def send_json(self, request: ApiRequest) -> dict[str, Any]:
        """Async twin of :meth:`SyncTransport.send_json`: same request, retry and errors."""
        import httpx

        settings = self.settings
        state = RetryState(request, settings)
        headers = {**settings.headers(), "Accept": request.accept}
        while True:
            try:
                response = await self.client.request(
                    request.method,
                    settings.url(request.path),
                    params=settings.query(request.params),
                    json=request.json,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                await asyncio.sleep(state.after_failure(httpx_failure_kind(exc), exc))
                continue
            # The body is read and the stream closed. httpx keeps the response and its stream in a reference
            # cycle (~40 objects a request) that only the cyclic collector frees; with hundreds of triggers the
            # cycles outlive young collections and each full collection of the triggerer's heap stalls the loop
            # for 100+ ms. Unlinking the spent stream lets reference counting free the request at once.
            response.stream = httpx.ByteStream(b"")
            if response.status_code >= 400:
                body = response.content[:MAX_ERROR_BODY]
                await asyncio.sleep(state.after_status(response.status_code, response.headers, body))
                continue
            try:
                return decode_json(
                    request, response.status_code, response.headers, response.content, secrets=state.secrets
                )
            except InvalidResponseError as exc:
                await asyncio.sleep(state.after_unreadable(exc))


def httpx_failure_kind(exc: BaseException) -> TransportFailure:
    import httpx

    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return "connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "read"
