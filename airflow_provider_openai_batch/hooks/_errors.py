"""One error mapping for both transports: an error response or a failed send becomes a typed exception.

Everything quoted from the server is redacted of the API key before it is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_openai_batch.exceptions import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CapacityError,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
    OpenAIBatchAPIError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    redact,
)
from airflow_provider_openai_batch.hooks._request import ApiRequest, TransportFailure
from airflow_provider_openai_batch.hooks._settings import opt_text

#: How much of an error body is kept (error bodies are small; a proxy's HTML page need not be).
MAX_ERROR_BODY = 64 * 1024

_STATUS_ERRORS: dict[int, type[OpenAIBatchAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_code(body: bytes) -> str | None:
    """``error.code`` of an error body, ``None`` when there is none."""
    try:
        payload = json.loads(body.decode("utf-8", errors="replace")) if body else None
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, Mapping) else None
    return opt_text(error.get("code")) if isinstance(error, Mapping) else None


#: ``error.code`` values meaning the enqueued-work limit (tokens or requests) of the model is reached.
CAPACITY_CODES = frozenset({"token_limit_exceeded", "request_limit_exceeded"})


def is_capacity_limit(code: str | None, message: str) -> bool:
    """Whether an error says the queue of batch work is full, by code or (Azure) by its message."""
    text = message.lower()
    return code in CAPACITY_CODES or ("enqueued" in text and "limit" in text)


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
        error_type = opt_text(redact(str(error.get("type") or ""), secrets))
        code = opt_text(redact(str(error.get("code") or ""), secrets))
        param = opt_text(redact(str(error.get("param") or ""), secrets))
    elif isinstance(error, str):
        message = error
    if not message:
        message = body[:500].decode("utf-8", errors="replace").strip() or "empty response body"
    message = redact(message, secrets)
    if status == 408 or status >= 500:
        cls: type[OpenAIBatchAPIError] = ServerError
    elif status in (400, 429) and is_capacity_limit(code, message):
        cls = CapacityError
        message += (
            " (the organization's queue of batch work for this model is full; nothing is wrong with the input:"
            " retry later, once earlier batches finish, or run fewer batches at once)"
        )
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


def may_still_be_working(error: OpenAIBatchAPIError) -> bool:
    """Whether a failed create may still be in progress on the server (it timed out rather than failed)."""
    if isinstance(error, APITimeoutError):
        return True
    return isinstance(error, ServerError) and error.status_code in (408, 504)
