"""The one table of error codes: what a batch's or a request's error means for running it again.

Every reader asks here: the single batch's verdict (:mod:`~airflow_provider_openai_batch.outcome`), the job's
admission and record (:mod:`~airflow_provider_openai_batch.job`), the merge. Pure: no Airflow, no HTTP.

A request line ends in one of four kinds (:class:`LineKind`):

* ``ANSWERED``: a 2xx response in an output file. Never sent again: it was billed.
* ``FINAL``: the request itself is at fault (400 ``invalid_request_error``, content policy, anything unknown):
  running it again gives the same answer.
* ``RETRYABLE``: the service failed it for a passing reason (HTTP 408, 429, 5xx, rate limits, timeouts).
* ``UNRUN``: it never ran (its batch expired, was cancelled, or left it out of both files; its output file is
  gone; its batch failed for capacity).

Within one try of a task, resubmission rounds (``max_resubmits``) run ``RETRYABLE`` lines and the ``UNRUN`` ones
the service left (not those of a batch someone cancelled, nor those the deadline stopped). A new try (a retry or
a clear) runs every line that is not ``ANSWERED`` or ``FINAL``.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

__all__ = [
    "BATCH_CANCELLED",
    "BATCH_EXPIRED",
    "CAPACITY_ERROR_CODES",
    "DEADLINE_EXCEEDED",
    "MISSING_RESULT",
    "RETRYABLE_CODES",
    "UNRUN_CODES",
    "LineKind",
    "classify_error",
    "classify_line",
    "is_passing_status",
    "resubmitted_within_try",
]

#: Batch error codes that say the organization's queue for the model was full when the batch was validated
#: (enqueued tokens, or enqueued requests), not that the input is wrong: the same file succeeds later.
#: Every other code (``invalid_json_line``, ``model_not_found``, ``duplicate_custom_id``, ...) is an input error.
CAPACITY_ERROR_CODES = frozenset({"token_limit_exceeded", "request_limit_exceeded"})

#: A request line of a batch that expired before it ran.
BATCH_EXPIRED = "batch_expired"
#: A request line of a batch cancelled before it ran.
BATCH_CANCELLED = "batch_cancelled"
#: A merged error line for an input line that no batch answered (nor listed in its error file).
MISSING_RESULT = "missing_result"
#: A merged error line for an input line the job's deadline left unrun (cancelled at it, or never sent).
DEADLINE_EXCEEDED = "deadline_exceeded"

#: Lines that never ran. Each is ``UNRUN``.
UNRUN_CODES = frozenset({BATCH_EXPIRED, BATCH_CANCELLED, MISSING_RESULT, DEADLINE_EXCEEDED})
#: Request error codes of a passing failure (besides HTTP 408, 429 and 5xx answers, whatever their code).
RETRYABLE_CODES = frozenset({"rate_limit_exceeded", "server_error", "internal_error", "timeout", "service_unavailable"})

_STATUS = re.compile(rb'"status_code"\s*:\s*(\d{3})')


class LineKind(enum.IntEnum):
    """What one result line means; a higher kind wins over a lower one for the same ``custom_id``."""

    UNRUN = 0
    RETRYABLE = 1
    FINAL = 2
    ANSWERED = 3


def is_passing_status(status: object) -> bool:
    """HTTP statuses of a failure that may pass: 408, 429 and 5xx."""
    return isinstance(status, int) and (status in (408, 429) or status >= 500)


def _kind_of(code: str, status: object) -> LineKind:
    if code in UNRUN_CODES:
        return LineKind.UNRUN
    if is_passing_status(status) or code in RETRYABLE_CODES:
        return LineKind.RETRYABLE
    return LineKind.FINAL


def classify_error(raw: bytes) -> tuple[str, LineKind]:
    """An error (or non-2xx output) line's code (its ``code``, else its ``type``, else ``http_<status>``) and kind."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "unknown", LineKind.FINAL
    if not isinstance(data, dict):
        return "unknown", LineKind.FINAL
    found = data.get("response")
    response: dict[str, Any] = found if isinstance(found, dict) else {}
    status = response.get("status_code")
    error = data.get("error")
    if not isinstance(error, dict):
        body = response.get("body")
        error = body.get("error") if isinstance(body, dict) else None
    code = (error.get("code") or error.get("type")) if isinstance(error, dict) else None
    code = str(code) if code else (f"http_{status}" if isinstance(status, int) else "unknown")
    return code, _kind_of(code, status)


def classify_line(raw: bytes, *, output: bool) -> LineKind:
    """The kind of one line of an output (``output=True``) or error file.

    An output line counts as answered only with a 2xx ``response.status_code`` (read without parsing the whole
    line: the status comes before the long body); anything else there is judged as an error line.
    """
    if output:
        match = _STATUS.search(raw)
        body = raw.find(b'"body"')
        if match is not None and (body < 0 or match.start() < body):  # the response's own status, not a body's
            status: object = int(match.group(1))
        else:
            try:
                data = json.loads(raw)
            except ValueError:
                return LineKind.FINAL
            response = data.get("response") if isinstance(data, dict) else None
            status = response.get("status_code") if isinstance(response, dict) else None
        if isinstance(status, int) and 200 <= status < 300:
            return LineKind.ANSWERED
    return classify_error(raw)[1]


def resubmitted_within_try(code: str, kind: LineKind) -> bool:
    """Whether a resubmission round of the same try runs this line again: passing failures and lines the service
    left unrun, never a line of a batch someone cancelled nor one the deadline stopped."""
    if kind is LineKind.RETRYABLE:
        return True
    return kind is LineKind.UNRUN and code not in (BATCH_CANCELLED, DEADLINE_EXCEEDED)
