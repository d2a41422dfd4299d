"""Transport-neutral pieces of the hook: settings, request description, retry policy, error mapping.

The synchronous path (``requests``) and the asynchronous path (``httpx``) of
:class:`~airflow_provider_openai_batch.hooks.openai_batch.OpenAIBatchHook` both build their calls from
:class:`ApiRequest`, decide retries with the same :class:`RetryState`, and turn error responses into
exceptions with the same :func:`api_error`. Only the few lines that actually send bytes differ.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from airflow_provider_openai_batch import __version__
from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidConnectionError,
    InvalidResponseError,
    NotFoundError,
    OpenAIBatchAPIError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    redact,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
API_TYPES = ("openai", "azure")
#: Statuses worth repeating for a call that is safe to repeat.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses a call that creates something may repeat: the server refused before doing anything.
SAFE_CREATE_RETRY_STATUSES = frozenset({429})
#: How much of an error body is kept (error bodies are small; a proxy's HTML page need not be).
MAX_ERROR_BODY = 64 * 1024

TransportFailure = Literal["connect", "read", "timeout"]


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the hook needs from an Airflow connection, validated once.

    :param conn_id: the connection id, for error messages.
    :param api_key: the secret; kept out of ``repr`` and never logged.
    :param base_url: scheme, host and path prefix every API path is appended to.
    :param api_type: ``openai`` (Bearer header) or ``azure`` (``api-key`` header).
    :param organization: sent as ``OpenAI-Organization`` when set.
    :param project: sent as ``OpenAI-Project`` when set.
    :param api_version: Azure ``api-version`` query parameter, added to every call when set.
    :param connect_timeout: seconds for the TCP/TLS handshake.
    :param read_timeout: seconds between bytes of a response.
    :param max_retries: retries of one call on a transient failure.
    :param backoff_factor: first backoff step in seconds; doubles each retry, jitter added.
    :param backoff_max: cap of one backoff step.
    :param max_retry_after: longest ``Retry-After`` hint obeyed; a longer one ends the retries.
    :param verify_ssl: verify TLS certificates (on unless turned off explicitly).
    """

    conn_id: str
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    api_type: str = "openai"
    organization: str | None = None
    project: str | None = None
    api_version: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0
    verify_ssl: bool = True

    @classmethod
    def from_connection_fields(
        cls,
        conn_id: str,
        *,
        host: str | None,
        password: str | None,
        extra: str | Mapping[str, Any] | None,
        schema: str | None = None,
        port: int | None = None,
    ) -> ConnectionSettings:
        """Validate the fields of an Airflow connection.

        Pure function of the fields, so the synchronous and the asynchronous connection lookups share it.

        :raises InvalidConnectionError: naming the field that is missing or wrong.
        """
        extras = _parse_extra(conn_id, extra)
        client_kwargs = extras.get("openai_client_kwargs")
        # Connections made for apache-airflow-providers-openai keep these under openai_client_kwargs.
        legacy = client_kwargs if isinstance(client_kwargs, Mapping) else {}

        api_key = password or extras.get("api_key") or legacy.get("api_key")
        if not api_key or not str(api_key).strip():
            raise InvalidConnectionError(conn_id, "no API key: put it in the connection's Password field.")
        base_url = _base_url(conn_id, host or legacy.get("base_url") or extras.get("base_url"), schema, port)

        api_type = str(extras.get("api_type") or "openai").strip().lower()
        if api_type not in API_TYPES:
            raise InvalidConnectionError(
                conn_id, f"unknown api_type {api_type!r} in extra; use one of {', '.join(API_TYPES)}."
            )
        return cls(
            conn_id=conn_id,
            api_key=str(api_key).strip(),
            base_url=base_url,
            api_type=api_type,
            organization=_opt_text(extras.get("organization") or legacy.get("organization")),
            project=_opt_text(extras.get("project") or legacy.get("project")),
            api_version=_opt_text(extras.get("api_version")),
            connect_timeout=_number(conn_id, extras, "connect_timeout", 10.0, minimum=0.1),
            read_timeout=_number(conn_id, extras, "timeout", 60.0, minimum=1.0),
            max_retries=int(_number(conn_id, extras, "max_retries", 5, minimum=0, maximum=20)),
            backoff_factor=_number(conn_id, extras, "backoff_factor", 0.5, minimum=0.0),
            backoff_max=_number(conn_id, extras, "backoff_max", 30.0, minimum=0.0),
            max_retry_after=_number(conn_id, extras, "max_retry_after", 60.0, minimum=0.0),
            verify_ssl=_boolean(conn_id, extras, "verify_ssl", True),
        )

    def with_overrides(self, **changes: Any) -> ConnectionSettings:
        """A copy with some fields replaced (``None`` values are ignored)."""
        from dataclasses import replace

        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self) -> dict[str, str]:
        """Authentication and identification headers. Never log these."""
        headers = {"User-Agent": f"airflow-provider-openai-batch/{__version__}"}
        if self.api_type == "azure":
            headers["api-key"] = self.api_key
        else:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    def query(self, params: Mapping[str, Any] | None) -> dict[str, str]:
        query = {key: str(value) for key, value in (params or {}).items() if value is not None}
        if self.api_version:
            query["api-version"] = self.api_version
        return query

    def retry(self, *, idempotent: bool) -> OpenAIRetry:
        """A fresh retry budget for one call.

        A call that creates something (``idempotent=False``) is repeated only when the server surely did
        nothing: a refused connection or a 429. A timeout or 5xx after the request was sent is left to
        the caller, who can look the object up before creating it again.
        """
        return OpenAIRetry(
            total=self.max_retries,
            connect=self.max_retries,
            read=self.max_retries if idempotent else 0,
            status=self.max_retries,
            other=0,
            redirect=0,
            allowed_methods=None,
            status_forcelist=RETRY_STATUSES if idempotent else SAFE_CREATE_RETRY_STATUSES,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            backoff_jitter=self.backoff_factor,
            raise_on_status=False,
            respect_retry_after_header=True,
            max_retry_after=self.max_retry_after,
        )


def _parse_extra(conn_id: str, extra: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if extra is None or extra == "":
        return {}
    if isinstance(extra, Mapping):
        return extra
    try:
        parsed = json.loads(extra)
    except ValueError as exc:
        raise InvalidConnectionError(conn_id, f"Extra is not valid JSON ({exc}).") from None
    if not isinstance(parsed, Mapping):
        raise InvalidConnectionError(conn_id, "Extra must be a JSON object.")
    return parsed


def _base_url(conn_id: str, host: object, schema: str | None, port: int | None) -> str:
    raw = str(host).strip() if host else DEFAULT_BASE_URL
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        if schema in ("http", "https") and "://" not in raw:
            # URI-style connections ("openai_batch://:key@host:port/path?...") split the URL apart.
            raw = f"{schema}://{raw}{':' + str(port) if port else ''}"
            parts = urlsplit(raw)
        else:
            raise InvalidConnectionError(
                conn_id,
                f"base URL {raw!r} (the Host field) needs a scheme and a host, e.g. {DEFAULT_BASE_URL}.",
            )
    elif (port and parts.port is None) or (schema and not parts.path.strip("/")):
        # URI-style connections with the protocol in the host ("openai-batch://https://:key@host:port/v1")
        # arrive as host "https://host", port and schema "v1": put the port and the path back.
        netloc = f"{parts.netloc}:{port}" if port and parts.port is None else parts.netloc
        path = parts.path if parts.path.strip("/") or not schema else "/" + schema.strip("/")
        raw = f"{parts.scheme}://{netloc}{path}"
    if parts.query or parts.fragment:
        raise InvalidConnectionError(
            conn_id,
            "base URL must not carry a query or fragment; put api-version in the extra 'api_version'.",
        )
    if parts.username or parts.password:
        raise InvalidConnectionError(conn_id, "base URL must not embed credentials; use the Password field.")
    return raw.rstrip("/")


def _opt_text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _number(
    conn_id: str,
    extras: Mapping[str, Any],
    key: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
) -> float:
    value = extras.get(key)
    if value is None or value == "":
        return float(default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidConnectionError(conn_id, f"extra {key!r} must be a number, got {value!r}.") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise InvalidConnectionError(conn_id, f"extra {key!r} must be {bounds}, got {value!r}.")
    return number


def _boolean(conn_id: str, extras: Mapping[str, Any], key: str, default: bool) -> bool:
    value = extras.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InvalidConnectionError(conn_id, f"extra {key!r} must be true or false, got {value!r}.")


class OpenAIRetry(Retry):
    """urllib3's :class:`Retry`, honouring OpenAI's ``retry-after-ms`` and capping hints.

    :param max_retry_after: longest server hint obeyed; a longer hint ends the retries, since waiting
        that long inside one call would hold a worker or a trigger for no reason.
    """

    def __init__(self, *args: Any, max_retry_after: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> OpenAIRetry:
        new = super().new(**kw)
        assert isinstance(new, OpenAIRetry)
        new.max_retry_after = self.max_retry_after
        return new

    def hint(self, headers: Mapping[str, str]) -> float | None:
        """The server's delay hint in seconds, ``None`` when it gave none or an unreadable one."""
        millis = headers.get("retry-after-ms")
        if millis:
            try:
                return max(float(millis) / 1000.0, 0.0)
            except ValueError:
                pass
        seconds = headers.get("retry-after")
        if seconds:
            try:
                return float(self.parse_retry_after(seconds))
            except Exception:  # an unparsable hint is no hint
                return None
        return None


class _StatusOnly:
    """The part of a urllib3 response that :meth:`Retry.increment` reads."""

    def __init__(self, status: int) -> None:
        self.status = status

    def get_redirect_location(self) -> bool:
        return False


@dataclass(frozen=True)
class ApiRequest:
    """One API call, described independently of the HTTP client that sends it.

    :param method: HTTP method.
    :param path: path relative to the base URL, starting with ``/``.
    :param params: query parameters (``None`` values dropped).
    :param json: JSON body, if any.
    :param idempotent: whether sending it twice is harmless; decides which failures are retried.
    :param stream: keep the body unread so that it can be streamed (file content).
    :param accept: the ``Accept`` header.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    idempotent: bool = True
    stream: bool = False
    accept: str = "application/json"


class RetryState:
    """Sans-I/O retry bookkeeping for one call, shared by the sync and async transports.

    Each ``after_*`` method records one failed attempt and returns the seconds to wait before the next
    one, or raises the typed error when the call should give up. The transports only send and sleep.
    """

    def __init__(self, request: ApiRequest, settings: ConnectionSettings) -> None:
        self.request = request
        self.secrets = (settings.api_key,)
        self.retry: OpenAIRetry = settings.retry(idempotent=request.idempotent)
        self.attempts = 0

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

    def decode(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | float:
        """The JSON object of a success body, or the seconds to wait before fetching a broken one again.

        :raises InvalidResponseError: when a truncated or non-JSON body cannot be fetched again.
        """
        try:
            return decode_json(self.request, status, headers, body, secrets=self.secrets)
        except InvalidResponseError as exc:
            delay = self.delay_after_failure("read")
            if delay is None:
                raise
            self._log_retry(f"unreadable body ({exc.message[:60]})", delay)
            return delay

    def _log_retry(self, what: str, delay: float) -> None:
        log.warning("%s %s: %s; retry %d in %.1fs", self.request.method, self.request.path, what, self.attempts, delay)

    def delay_after_status(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> float | None:
        """Seconds to wait before repeating after an error status, or ``None`` to give up.

        :param body: the (bounded) error body; a 429 ``insufficient_quota`` is not retried, since waiting
            does not add credit.
        """
        if status == 429 and _error_code(body) == "insufficient_quota":
            return None
        hint = self.retry.hint(headers)
        if hint is not None and hint > self.retry.max_retry_after:
            return None
        if headers.get("x-should-retry", "").lower() == "false":
            return None
        if not self.request.idempotent and status not in SAFE_CREATE_RETRY_STATUSES:
            # urllib3 would also honour Retry-After on 413/503; a create answered so may have happened.
            return None
        if not self.retry.is_retry(self.request.method, status, has_retry_after=hint is not None):
            return None
        try:
            self.retry = self.retry.increment(
                method=self.request.method,
                url=self.request.path,
                response=_StatusOnly(status),  # type: ignore[arg-type]
            )
        except MaxRetryError:
            return None
        self.attempts += 1
        return max(hint or 0.0, self.retry.get_backoff_time())

    def delay_after_failure(self, kind: TransportFailure) -> float | None:
        """Seconds to wait after a transport failure, or ``None`` to give up.

        ``connect`` failures never reached the server; ``read`` and ``timeout`` failures may have.
        """
        error = ConnectTimeoutError(kind) if kind == "connect" else ProtocolError(kind)
        try:
            self.retry = self.retry.increment(method=self.request.method, url=self.request.path, error=error)
        except (MaxRetryError, ProtocolError):
            return None
        self.attempts += 1
        return self.retry.get_backoff_time()


_STATUS_ERRORS: dict[int, type[OpenAIBatchAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def _error_code(body: bytes) -> str | None:
    """``error.code`` of an error body, ``None`` when there is none."""
    try:
        payload = json.loads(body.decode("utf-8", errors="replace")) if body else None
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, Mapping) else None
    return _opt_text(error.get("code")) if isinstance(error, Mapping) else None


def api_error(
    request: ApiRequest,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: tuple[str, ...],
) -> OpenAIBatchAPIError:
    """The typed exception for an error response; the server's text is redacted of ``secrets``."""
    error_type = code = param = None
    message = ""
    try:
        payload = json.loads(body.decode("utf-8", errors="replace")) if body else None
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, Mapping) else None
    if isinstance(error, Mapping):
        message = str(error.get("message") or "")
        # Redacted like the message: a gateway may echo the key in any of them.
        error_type = _opt_text(redact(str(error.get("type") or ""), secrets))
        code = _opt_text(redact(str(error.get("code") or ""), secrets))
        param = _opt_text(redact(str(error.get("param") or ""), secrets))
    elif isinstance(error, str):
        message = error
    if not message:
        message = body[:500].decode("utf-8", errors="replace").strip() or "empty response body"
    message = redact(message, secrets)
    if status == 408 or status >= 500:
        cls: type[OpenAIBatchAPIError] = ServerError
    elif status == 429 and code == "insufficient_quota":
        cls = QuotaExceededError
        message += " (the account's quota is used up: add credit or raise the limit; retrying will not help)"
    else:
        cls = _STATUS_ERRORS.get(status, BadRequestError if 400 <= status < 500 else OpenAIBatchAPIError)
    return cls(
        message,
        status_code=status,
        error_type=error_type,
        code=code,
        param=param,
        request_id=headers.get("x-request-id") or headers.get("apim-request-id"),
        method=request.method,
        path=request.path,
    )


def transport_error(
    request: ApiRequest, kind: TransportFailure, exc: BaseException, attempts: int
) -> APIConnectionError:
    """The typed exception for a call that got no usable response after ``attempts`` retries."""
    cls = APITimeoutError if kind == "timeout" else APIConnectionError
    retried = f" after {attempts} retr{'y' if attempts == 1 else 'ies'}" if attempts else ""
    detail = type(exc).__name__
    reason = str(exc).split("\n")[0][:300]
    error = cls(f"{detail}: {reason}{retried}", method=request.method, path=request.path)
    error.reached_server = kind != "connect"
    return error


def invalid_response(
    request: ApiRequest, status: int, headers: Mapping[str, str], body: bytes, *, secrets: tuple[str, ...] = ()
) -> InvalidResponseError:
    # Redacted: a misconfigured proxy's debug page may echo the request headers.
    snippet = redact(body[:200].decode("utf-8", errors="replace"), secrets)
    return InvalidResponseError(
        f"expected a JSON object, got {len(body)} byte(s) starting {snippet!r}",
        status_code=status,
        request_id=headers.get("x-request-id"),
        method=request.method,
        path=request.path,
    )


def decode_json(
    request: ApiRequest, status: int, headers: Mapping[str, str], body: bytes, *, secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Parse a success body, raising :class:`InvalidResponseError` for a truncated or non-JSON one.

    :param secrets: strings to redact from the quoted body (the API key).
    """
    try:
        payload = json.loads(body)
    except ValueError:
        raise invalid_response(request, status, headers, body, secrets=secrets) from None
    if not isinstance(payload, dict):
        raise invalid_response(request, status, headers, body, secrets=secrets)
    return payload


def is_ambiguous(error: OpenAIBatchAPIError) -> bool:
    """Whether a failed create may still have created its object on the server."""
    if isinstance(error, APIConnectionError):
        return error.reached_server
    return isinstance(error, (ServerError, InvalidResponseError))
