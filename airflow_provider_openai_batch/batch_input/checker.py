"""The line rules of the Batch API, applied one line at a time: shared by the validator and the writer."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.batch_input.records import InputSummary
from airflow_provider_openai_batch.endpoints import endpoint_spec, normalize_endpoint
from airflow_provider_openai_batch.estimate import CostEstimator
from airflow_provider_openai_batch.exceptions import BatchInputError, InputProblem

if TYPE_CHECKING:
    from airflow_provider_openai_batch.pricing import PriceTable

__all__ = ["DEFAULT_MAX_PROBLEMS", "LineChecker", "RequestCallback", "StopCheck", "show"]

DEFAULT_MAX_PROBLEMS = 100
_BOM = b"\xef\xbb\xbf"

#: Called with ``(line number, request object)`` for every line that parsed as a JSON object, in file
#: order, during the one pass: an estimator (tokens, cost) plugs in here instead of reading the file again.
RequestCallback = Callable[[int, Mapping[str, Any]], None]


class StopCheck(Exception):
    """Raised inside the checker to end the pass early (too many problems, file too large)."""


def show(value: object, limit: int = 80) -> str:
    """``repr`` of a value, cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity; JSON (and the API) does not.
    raise ValueError(f"{name} is not valid JSON")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size} bytes"


class LineChecker:
    """Applies every line rule of the Batch API, one line at a time, keeping only what rules need.

    State kept across lines: the ``custom_id`` of every line seen (with its line number, so that a
    duplicate can name the first one), the first url and model, and the running size and hash.
    """

    def __init__(
        self,
        *,
        endpoint: str | None,
        max_requests: int,
        max_bytes: int,
        max_problems: int = DEFAULT_MAX_PROBLEMS,
        on_request: RequestCallback | None = None,
        max_embedding_inputs: int | None = None,
    ) -> None:
        self.endpoint = normalize_endpoint(endpoint) if endpoint is not None else None
        self.endpoint_line: int | None = None
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_problems = max_problems
        self.problems: list[InputProblem] = []
        self.truncated = False
        self.ids: dict[str, int] = {}
        self.model: str | None = None
        self.model_line = 0
        self.other_models: set[str] = set()
        self.requests = 0
        self.bytes = 0
        self.lines = 0
        self.too_many_line: int | None = None
        self.hasher = hashlib.sha256()
        self.on_request = on_request
        #: ``None``: not checked (a job counts its shards' inputs itself).
        self.max_embedding_inputs = max_embedding_inputs
        self.embedding_inputs = 0
        self.embedding_limit_line: int | None = None
        #: warning code -> [first line, lines, message]: reported once each, with how often it applies.
        self.notes: dict[str, list[Any]] = {}
        #: the pre-flight cost bound, added up in the same pass (see :mod:`~airflow_provider_openai_batch.estimate`).
        self.estimator = CostEstimator()

    def add(self, line: int | None, code: str, message: str) -> None:
        if len(self.problems) >= self.max_problems:
            self.truncated = True
            raise StopCheck
        self.problems.append(InputProblem(line, code, message))

    def reject_request(self, code: str, message: str) -> None:
        """Count a request that never became a line (the writer could not encode it) and report it."""
        self.lines += 1
        self.requests += 1
        self.add(self.lines, code, message)

    def too_large(self, size: int, *, exact: bool) -> None:
        amount = f"{size:,} bytes" if exact else f"more than {self.max_bytes:,} bytes"
        self.add(
            None,
            "file_too_large",
            f"the file is {amount}, over the limit of {self.max_bytes:,} bytes ({_mib(self.max_bytes)}); "
            "split the requests into several batches",
        )
        raise StopCheck

    def count_past_limit(self) -> bool:
        """Count one more request when the request limit is already broken; True if it was."""
        if self.too_many_line is None:
            return False
        self.requests += 1
        return True

    def feed(self, raw: bytes) -> None:
        """Check one raw line, newline included; raises :class:`StopCheck` to end the pass."""
        self.lines += 1
        line_no = self.lines
        offset = self.bytes
        self.bytes += len(raw)
        if self.bytes > self.max_bytes:
            self.too_large(self.bytes, exact=False)
        self.hasher.update(raw)
        data = raw
        if line_no == 1 and data.startswith(_BOM):
            self.add(
                1,
                "utf8_bom",
                "the file starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM "
                "(Azure rejects it with a misleading 'deployment name' error)",
            )
            data = data[len(_BOM) :]
            offset += len(_BOM)
        blank = not data.strip()
        if self.too_many_line is not None:
            if not blank:
                self.requests += 1
            return
        if blank:
            self.add(line_no, "empty_line", "empty line; remove it (only one newline may end the file)")
            return
        self.requests += 1
        if self.requests > self.max_requests:
            self.too_many_line = line_no
            return
        self._check_line(line_no, data, offset)

    def _check_line(self, line_no: int, data: bytes, offset: int) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.add(
                line_no,
                "not_utf8",
                f"invalid UTF-8 byte 0x{data[exc.start]:02x} at byte offset {exc.start} of the line "
                f"(offset {offset + exc.start} in the file); save the file as UTF-8",
            )
            return
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            self.add(line_no, "invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno} (char {exc.pos})")
            return
        except (ValueError, RecursionError) as exc:
            self.add(line_no, "invalid_json", f"invalid JSON: {exc}")
            return
        if not isinstance(obj, dict):
            self.add(
                line_no,
                "not_an_object",
                f"the line is a JSON {type(obj).__name__}, not an object; each line must be "
                '{"custom_id": ..., "method": "POST", "url": ..., "body": {...}}',
            )
            return
        self._check_request(line_no, obj)
        body = obj.get("body")
        if isinstance(body, dict):
            self.estimator.add(self.endpoint, body, data)
        if self.on_request is not None:
            self.on_request(line_no, obj)

    def _check_request(self, line_no: int, obj: Mapping[str, Any]) -> None:
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            what = "missing" if custom_id is None else f"invalid ({show(custom_id)})"
            self.add(line_no, "missing_custom_id", f"custom_id is {what}; give every line a unique, non-empty string")
        elif custom_id in self.ids:
            self.add(
                line_no,
                "duplicate_custom_id",
                f"duplicate custom_id {show(custom_id)} (first seen on line {self.ids[custom_id]})",
            )
        else:
            self.ids[custom_id] = line_no

        method = obj.get("method")
        if method != "POST":
            what = "missing" if method is None else show(method)
            self.add(line_no, "invalid_method", f'method is {what}; the Batch API only runs "POST"')

        self._check_url(line_no, obj.get("url"))

        body = obj.get("body")
        if not isinstance(body, dict):
            what = "missing" if body is None else f"a JSON {type(body).__name__}"
            self.add(line_no, "missing_body", f"body is {what}; it must be the endpoint's request object")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            what = "missing" if model is None else f"invalid ({show(model)})"
            self.add(line_no, "missing_model", f"body.model is {what}; every request must name the model")
        elif self.model is None:
            self.model, self.model_line = model, line_no
        elif model != self.model and model not in self.other_models:
            # Reported once per extra model: which of two models is "wrong" is the user's call.
            self.other_models.add(model)
            self.add(
                line_no,
                "model_mismatch",
                f"model {show(model)} (first used on line {line_no}) differs from model "
                f"{show(self.model)} (first used on line {self.model_line}); a batch runs one model: "
                "split the file by model",
            )
        if body.get("stream") is True:
            self.add(
                line_no,
                "streaming_not_supported",
                'body.stream is true; batches cannot stream: remove "stream" or set it to false',
            )
        spec = endpoint_spec(self.endpoint)
        if spec is None:  # an endpoint the registry does not know: the service checks the rest
            return
        if spec.batch_inputs is not None:
            self.embedding_inputs += spec.inputs(body)
            limit = self.max_embedding_inputs
            if limit is not None and self.embedding_limit_line is None and self.embedding_inputs > limit:
                self.embedding_limit_line = line_no
        # Warnings, not problems: which field a model or gateway takes is only known to the service.
        for token_note in spec.token_notes:
            if token_note.applies(body):
                self.note(line_no, token_note.code, token_note.message)

    def note(self, line_no: int, code: str, message: str) -> None:
        """Record a warning: something the service may reject or ignore, which does not stop the upload."""
        seen = self.notes.get(code)
        if seen is None:
            self.notes[code] = [line_no, 1, message]
        else:
            seen[1] += 1

    def warnings(self) -> tuple[str, ...]:
        """Each warning once, with its first line and how many lines it applies to."""
        out = []
        for first, count, message in self.notes.values():
            more = f" (and {count - 1:,} more lines)" if count > 1 else ""
            out.append(f"line {first}{more}: {message}")
        return tuple(out)

    def describe_limits(self) -> str:
        """The limits this check applied, for the error message (unbounded ones left out)."""
        parts = [f"{self.max_requests:,} requests" if self.max_requests < sys.maxsize else ""]
        parts.append(f"{self.max_bytes:,} bytes ({_mib(self.max_bytes)})" if self.max_bytes < sys.maxsize else "")
        spec = endpoint_spec(self.endpoint)
        if self.max_embedding_inputs is not None and spec is not None and spec.batch_inputs is not None:
            parts.append(f"{self.max_embedding_inputs:,} embedding inputs")
        shown = [part for part in parts if part]
        return f"{', '.join(shown)} per file" if shown else ""

    def _check_url(self, line_no: int, url: object) -> None:
        if not isinstance(url, str) or not url.startswith("/"):
            expected = f" such as {self.endpoint!r}" if self.endpoint else ""
            what = "missing" if url is None else f"invalid ({show(url)})"
            self.add(line_no, "url_mismatch", f"url is {what}; it must be the batch endpoint path{expected}")
            return
        normalized = normalize_endpoint(url)
        if self.endpoint is None:
            self.endpoint, self.endpoint_line = normalized, line_no
        elif normalized != self.endpoint:
            if self.endpoint_line is None:
                reason = f"the batch endpoint {self.endpoint!r}"
            else:
                reason = f"the url {self.endpoint!r} of line {self.endpoint_line}; a batch runs one endpoint"
            self.add(line_no, "url_mismatch", f"url {show(url)} does not match {reason}")

    def finish(self) -> None:
        """Add the whole-file problems known only at the end."""
        if self.too_many_line is not None:
            self.add(
                self.too_many_line,
                "too_many_requests",
                f"the file holds {self.requests:,} requests, over the limit of {self.max_requests:,} "
                f"(line {self.too_many_line} is request {self.max_requests + 1:,}); "
                "split the requests into several batches",
            )
        if self.embedding_limit_line is not None:
            self.add(
                self.embedding_limit_line,
                "too_many_embedding_inputs",
                f"the file holds {self.embedding_inputs:,} embedding inputs across its requests, over the limit "
                f"of {self.max_embedding_inputs:,} per batch (passed on line {self.embedding_limit_line}; an "
                "input list counts each element); split the requests into several batches",
            )
        if self.requests == 0:
            self.add(None, "empty_file", "the file holds no requests")

    def summary(self, path: str | None, prices: PriceTable | None = None) -> InputSummary:
        """What the file holds, with its cost estimate priced by ``prices`` (the shipped table by default)."""
        return InputSummary(
            path=path,
            requests=self.requests,
            bytes=self.bytes,
            model=self.model,
            endpoint=self.endpoint,
            sha256=self.hasher.hexdigest(),
            estimate=self.estimator.result(self.endpoint, prices),
            embedding_inputs=self.embedding_inputs,
            warnings=self.warnings(),
        )

    def raise_if_problems(self, source: str) -> None:
        if self.problems:
            raise BatchInputError(source, self.problems, truncated=self.truncated, limits=self.describe_limits())
