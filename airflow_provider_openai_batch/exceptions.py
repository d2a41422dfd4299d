"""Typed errors of the provider, catchable by meaning.

No message, ``repr`` or log line built here ever contains the API key: server text is passed
through :func:`redact` with the key before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchInputError",
    "CapacityError",
    "ConflictError",
    "DestinationOwnedError",
    "InputProblem",
    "InvalidConnectionError",
    "InvalidResponseError",
    "NotFoundError",
    "OpenAIBatchAPIError",
    "OpenAIBatchError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "redact",
]

_REDACTED = "***"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return text


class OpenAIBatchError(Exception):
    """Base class of every error raised by this provider."""


class InvalidConnectionError(OpenAIBatchError, ValueError):
    """The Airflow connection is missing a field or holds an invalid value."""

    def __init__(self, conn_id: str, message: str) -> None:
        self.conn_id = conn_id
        super().__init__(f"Connection {conn_id!r}: {message}")


class OpenAIBatchAPIError(OpenAIBatchError):
    """The API answered with an error, or could not be reached.

    :param message: the server's message (redacted) or a description of the transport failure.
    :param status_code: HTTP status, ``None`` when no response was received.
    :param error_type: ``error.type`` of the body (e.g. ``invalid_request_error``).
    :param code: ``error.code`` of the body (e.g. ``insufficient_quota``).
    :param param: ``error.param`` of the body: the request field the server blames.
    :param request_id: ``x-request-id`` of the response; quote it to OpenAI support.
    :param method: HTTP method of the failed call.
    :param path: path of the failed call, relative to the base URL (never a query string).
    """

    #: Whether repeating the same call later may succeed.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.method = method
        self.path = path
        super().__init__(self._render())

    def add_hint(self, hint: str) -> None:
        """Append what happened or what to do next to the message (``str(error)`` follows)."""
        self.message = f"{self.message} ({hint})"
        self.args = (self._render(),)

    def _render(self) -> str:
        call = f"{self.method} {self.path}" if self.method and self.path else "OpenAI API call"
        status = f"HTTP {self.status_code}" if self.status_code is not None else "no response"
        details = [f"{name}={value}" for name, value in self._detail_items() if value]
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{call} failed with {status}: {self.message}{suffix}"

    def _detail_items(self) -> Sequence[tuple[str, str | None]]:
        return (
            ("type", self.error_type),
            ("code", self.code),
            ("param", self.param),
            ("request_id", self.request_id),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the typed attributes when the error crosses a process boundary (pickling).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[OpenAIBatchAPIError], message: str, state: Mapping[str, Any]) -> OpenAIBatchAPIError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._render())
    return error


class BadRequestError(OpenAIBatchAPIError):
    """HTTP 400: the request is invalid (bad field, unsupported endpoint, limit broken)."""


class AuthenticationError(OpenAIBatchAPIError):
    """HTTP 401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(OpenAIBatchAPIError):
    """HTTP 403: the key may not use this resource (project, organization or region)."""


class NotFoundError(OpenAIBatchAPIError):
    """HTTP 404: no such batch or file (or the base URL points at the wrong place)."""


class ConflictError(OpenAIBatchAPIError):
    """HTTP 409: the object is in a state that forbids the call (e.g. cancelling a finished batch)."""


class RateLimitError(OpenAIBatchAPIError):
    """HTTP 429: too many requests; retried with backoff before this is raised."""

    retryable = True


class QuotaExceededError(RateLimitError):
    """HTTP 429 ``insufficient_quota``: waiting does not help; the account needs credit or a higher limit."""

    retryable = False


class CapacityError(OpenAIBatchAPIError):
    """The organization's queue for the model is full (enqueued tokens or batch requests): nothing wrong with the
    input; the same create succeeds once earlier batches finish. Azure OpenAI answers a create so with HTTP 400.
    """

    retryable = True


class ServerError(OpenAIBatchAPIError):
    """HTTP 5xx (or 408): the service failed; retried with backoff before this is raised."""

    retryable = True


class APIConnectionError(OpenAIBatchAPIError):
    """No HTTP response: DNS, TCP, TLS failure, a dropped connection or a timeout."""

    retryable = True
    #: False only when the connection was never established, so the server surely did nothing.
    reached_server: bool = True


class APITimeoutError(APIConnectionError):
    """The connect or read timeout elapsed."""


class InvalidResponseError(OpenAIBatchAPIError):
    """A response arrived but its body was not the JSON the API promises (truncated, HTML, ...)."""

    retryable = True


@dataclass(frozen=True)
class InputProblem:
    """One problem found in a batch input file.

    :param line: 1-based line number, ``None`` for a problem of the whole file.
    :param code: a stable, machine-readable code (``invalid_json``, ``duplicate_custom_id``, ...).
    :param message: what is wrong and how to fix it.
    """

    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.message} [{self.code}]"


class BatchInputError(OpenAIBatchError, ValueError):
    """A batch input file is invalid; nothing was uploaded.

    :param source: the file or description of the input that was checked.
    :param problems: every problem found (at most the first ``max_problems`` are kept).
    :param limits: the per-file limits the input was checked against, in words (they differ by service).
    """

    def __init__(
        self, source: str, problems: Sequence[InputProblem], *, truncated: bool = False, limits: str = ""
    ) -> None:
        self.source = source
        self.problems = tuple(problems)
        self.truncated = truncated
        self.limits = limits
        shown = "\n".join(f"  - {problem}" for problem in self.problems[:20])
        more = len(self.problems) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        cut = "\n  (stopped after the first problems)" if truncated else ""
        checked = f"\n  (checked against the limits {limits})" if limits else ""
        count = len(self.problems)
        super().__init__(f"Invalid batch input {source}: {count} problem(s)\n{shown}{tail}{cut}{checked}")


class DestinationOwnedError(OpenAIBatchError, FileExistsError):
    """A file at a job's destination belongs to another task instance: refused, nothing was written over it.

    :param path: the file (or object) refused.
    :param owner: the task instance that claimed it (``dag_id``, ``task_id``, ``run_id``, ``map_index``); ``None``
        when no owner is recorded for it (a file written by hand or before owners were recorded, or an owner
        record that cannot be read).
    """

    def __init__(self, path: str, owner: Mapping[str, Any] | None) -> None:
        self.path = path
        self.owner = dict(owner) if owner is not None else None
        if owner is None:
            whose = "it exists and no task instance is recorded as its owner"
        else:
            described = ", ".join(f"{key} {value!r}" for key, value in owner.items())
            whose = f"it belongs to another task instance ({described}, recorded in {path}.owner)"
        super().__init__(f"Not overwriting {path}: {whose}. Give overwrite=True to replace it, or another destination")
