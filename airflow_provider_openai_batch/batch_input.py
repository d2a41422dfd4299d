"""Build, check and read the JSONL files of a batch, before and after the API sees them.

A batch input that breaks a rule is only rejected by the API after upload and validation, minutes
later and with terse messages. :func:`validate_batch_input` applies the same rules locally, in one
streaming pass with small, constant memory (a 200 MB file is never held in memory), and reports every
problem with its line number and a code. :func:`write_batch_input` builds a file from requests with the
same checks and never leaves a half-written file behind. :func:`read_results` and
:func:`iter_results` turn output and error files back into :class:`BatchResult` objects keyed by
``custom_id``.

Only the standard library is imported here: DAG files import this module while being parsed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, TextIO, TypeAlias

from airflow_provider_openai_batch.exceptions import BatchInputError, InputProblem

__all__ = [
    "CHAT_COMPLETIONS",
    "EMBEDDINGS",
    "MAX_INPUT_BYTES",
    "MAX_REQUESTS",
    "RESPONSES",
    "BatchRequest",
    "BatchResult",
    "InputSummary",
    "build_chat_requests",
    "build_embedding_requests",
    "build_responses_requests",
    "iter_results",
    "iter_results_file",
    "normalize_endpoint",
    "read_results",
    "validate_batch_input",
    "write_batch_input",
]

#: Most requests one OpenAI batch input file may hold (Azure allows 100,000: pass ``max_requests``).
MAX_REQUESTS = 50_000
#: Largest batch input file OpenAI accepts: its documented "200 MB", read as MiB (the stricter reading
#: of the two would be 200,000,000 bytes; pass ``max_bytes`` to be more cautious).
MAX_INPUT_BYTES = 200 * 1024 * 1024

CHAT_COMPLETIONS = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"

_BOM = b"\xef\xbb\xbf"
_DEFAULT_MAX_PROBLEMS = 100
_COPY_CHUNK = 1024 * 1024

_Path: TypeAlias = "str | os.PathLike[str]"


# --------------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------------


def normalize_endpoint(url: str) -> str:
    """Return the ``/v1/...`` form of a batch endpoint or input-line ``url``.

    Azure shows endpoints and line urls without ``/v1`` (``/chat/completions``), OpenAI with it; both
    name the same endpoint, so they are compared in this one form.

    :param url: an endpoint such as ``/chat/completions``, ``/v1/chat/completions`` or ``v1/embeddings``.
    :raises ValueError: when ``url`` is not a non-empty string.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"An endpoint must be a non-empty string such as {CHAT_COMPLETIONS!r}, got {url!r}")
    path = url.strip()
    if not path.startswith("/"):
        path = "/" + path
    if path != "/v1" and not path.startswith("/v1/"):
        path = "/v1" + path
    return path


# --------------------------------------------------------------------------------------------------
# Requests and the summary of a checked file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: one line of the input file.

    :param custom_id: your key for the request; results come back in any order and are matched on it,
        so it must be unique in the file.
    :param body: the endpoint's normal request body; it must name the ``model`` (one model per file).
    :param url: the batch endpoint, e.g. ``/v1/chat/completions``; it must equal the batch's endpoint.
    :param method: always ``POST``: the only method the Batch API runs.
    """

    custom_id: str
    body: Mapping[str, Any]
    url: str
    method: str = "POST"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, endpoint: str | None = None) -> BatchRequest:
        """Build a request from an input line's object, filling ``url`` from ``endpoint`` when absent.

        Nothing is checked here: :func:`write_batch_input` and :func:`validate_batch_input` do it, with
        line numbers.
        """
        return cls(
            custom_id=data.get("custom_id"),  # type: ignore[arg-type]
            body=data.get("body"),  # type: ignore[arg-type]
            url=data.get("url", endpoint),  # type: ignore[arg-type]
            method=data.get("method", "POST"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The input line's object, keys in the order of OpenAI's examples."""
        return {"custom_id": self.custom_id, "method": self.method, "url": self.url, "body": self.body}

    def to_line(self) -> str:
        """The request as one compact JSON line, without a trailing newline.

        Non-ASCII text is written as UTF-8 rather than ``\\u`` escapes: it is smaller and the API reads it.

        :raises ValueError: when the body holds ``NaN``/``Infinity``, which JSON cannot carry.
        :raises TypeError: when the body holds a value JSON cannot encode.
        """
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class InputSummary:
    """What a valid batch input holds, as found by :func:`validate_batch_input` or :func:`write_batch_input`.

    :param path: the file checked or written, ``None`` for a stream without a name.
    :param requests: number of requests (lines) in the file.
    :param bytes: size of the file in bytes, as it will be uploaded.
    :param model: the one model all requests use (the deployment name on Azure).
    :param endpoint: the endpoint all lines target, in ``/v1/...`` form (see :func:`normalize_endpoint`).
    :param sha256: hex SHA-256 of the file's bytes; a changed value means a changed input, which lets a
        re-run tell whether an already uploaded file can be reused.
    """

    path: str | None
    requests: int
    bytes: int
    model: str | None
    endpoint: str | None
    sha256: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSummary:
        """Rebuild a summary from :meth:`to_dict` output (e.g. pulled from XCom)."""
        return cls(
            path=data.get("path"),
            requests=int(data.get("requests") or 0),
            bytes=int(data.get("bytes") or 0),
            model=data.get("model"),
            endpoint=data.get("endpoint"),
            sha256=str(data.get("sha256") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, small enough for XCom."""
        return {
            "path": self.path,
            "requests": self.requests,
            "bytes": self.bytes,
            "model": self.model,
            "endpoint": self.endpoint,
            "sha256": self.sha256,
        }


# --------------------------------------------------------------------------------------------------
# The checker shared by the validator and the writer
# --------------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised inside the checker to end the pass early (too many problems, file too large)."""


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity; JSON (and the API) does not.
    raise ValueError(f"{name} is not valid JSON")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size} bytes"


class _Checker:
    """Applies every line rule of the Batch API, one line at a time, keeping only what rules need.

    State kept across lines: the ``custom_id`` of every line seen (with its line number, so that a
    duplicate can name the first one), the first url and model, and the running size and hash.
    """

    def __init__(self, *, endpoint: str | None, max_requests: int, max_bytes: int, max_problems: int) -> None:
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

    def add(self, line: int | None, code: str, message: str) -> None:
        if len(self.problems) >= self.max_problems:
            self.truncated = True
            raise _Stop
        self.problems.append(InputProblem(line, code, message))

    def too_large(self, size: int, *, exact: bool) -> None:
        amount = f"{size:,} bytes" if exact else f"more than {self.max_bytes:,} bytes"
        self.add(
            None,
            "file_too_large",
            f"the file is {amount}, over the limit of {self.max_bytes:,} bytes ({_mib(self.max_bytes)}); "
            "split the requests into several batches",
        )
        raise _Stop

    def count_past_limit(self) -> bool:
        """Count one more request when the request limit is already broken; True if it was."""
        if self.too_many_line is None:
            return False
        self.requests += 1
        return True

    def feed(self, raw: bytes) -> None:
        """Check one raw line, newline included; raises :class:`_Stop` to end the pass."""
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

    def _check_request(self, line_no: int, obj: Mapping[str, Any]) -> None:
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            what = "missing" if custom_id is None else f"invalid ({_show(custom_id)})"
            self.add(line_no, "missing_custom_id", f"custom_id is {what}; give every line a unique, non-empty string")
        elif custom_id in self.ids:
            self.add(
                line_no,
                "duplicate_custom_id",
                f"duplicate custom_id {_show(custom_id)} (first seen on line {self.ids[custom_id]})",
            )
        else:
            self.ids[custom_id] = line_no

        method = obj.get("method")
        if method != "POST":
            what = "missing" if method is None else _show(method)
            self.add(line_no, "invalid_method", f'method is {what}; the Batch API only runs "POST"')

        self._check_url(line_no, obj.get("url"))

        body = obj.get("body")
        if not isinstance(body, dict):
            what = "missing" if body is None else f"a JSON {type(body).__name__}"
            self.add(line_no, "missing_body", f"body is {what}; it must be the endpoint's request object")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            what = "missing" if model is None else f"invalid ({_show(model)})"
            self.add(line_no, "missing_model", f"body.model is {what}; every request must name the model")
        elif self.model is None:
            self.model, self.model_line = model, line_no
        elif model != self.model and model not in self.other_models:
            # Reported once per extra model: which of two models is "wrong" is the user's call.
            self.other_models.add(model)
            self.add(
                line_no,
                "model_mismatch",
                f"model {_show(model)} (first used on line {line_no}) differs from model "
                f"{_show(self.model)} (first used on line {self.model_line}); a batch runs one model: "
                "split the file by model",
            )
        if body.get("stream") is True:
            self.add(
                line_no,
                "streaming_not_supported",
                'body.stream is true; batches cannot stream: remove "stream" or set it to false',
            )

    def _check_url(self, line_no: int, url: object) -> None:
        if not isinstance(url, str) or not url.startswith("/"):
            expected = f" such as {self.endpoint!r}" if self.endpoint else ""
            what = "missing" if url is None else f"invalid ({_show(url)})"
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
            self.add(line_no, "url_mismatch", f"url {_show(url)} does not match {reason}")

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
        if self.requests == 0:
            self.add(None, "empty_file", "the file holds no requests")

    def summary(self, path: str | None) -> InputSummary:
        return InputSummary(
            path=path,
            requests=self.requests,
            bytes=self.bytes,
            model=self.model,
            endpoint=self.endpoint,
            sha256=self.hasher.hexdigest(),
        )

    def raise_if_problems(self, source: str) -> None:
        if self.problems:
            raise BatchInputError(source, self.problems, truncated=self.truncated)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _describe(source: object) -> tuple[str, str | None]:
    """``(text for messages, path for the summary)`` of a file path or stream."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return str(path), str(path)
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name, name
    return f"<{type(source).__name__}>", None


def _read_lines(stream: IO[Any], checker: _Checker) -> None:
    # readline(limit) bounds what one call can read: a file without newlines never gets loaded whole.
    while True:
        room = checker.max_bytes - checker.bytes + 1
        raw = stream.readline(max(room, 1))
        if not raw:
            return
        if isinstance(raw, str):  # a text stream: tolerated, checked as the UTF-8 it will be uploaded as
            raw = raw.encode("utf-8", "surrogateescape")
        checker.feed(raw)


def validate_batch_input(
    source: _Path | BinaryIO,
    *,
    endpoint: str | None = None,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_INPUT_BYTES,
    max_problems: int = _DEFAULT_MAX_PROBLEMS,
) -> InputSummary:
    """Check a batch input file against the Batch API's rules before it is uploaded.

    The file is read once, line by line, in binary: memory stays small whatever the file size (only
    the ``custom_id`` of each line is kept, to find duplicates). A path whose size is over
    ``max_bytes`` is rejected from its size alone, without being read.

    :param source: a path, or a binary stream read from its current position (its size is then
        checked while reading).
    :param endpoint: the endpoint the batch will be created for, in either form (``/chat/completions``
        or ``/v1/chat/completions``); every line's ``url`` must match it. ``None``: every line must
        share the first line's url.
    :param max_requests: most requests allowed; raise it to 100,000 for Azure.
    :param max_bytes: largest file allowed, in bytes.
    :param max_problems: problems collected before the check stops (the error is then ``truncated``),
        so that a wholly broken file does not produce an error message of a million lines.
    :returns: what the file holds, including its SHA-256.
    :raises BatchInputError: listing every problem (with its 1-based line and code) when any is found,
        or when the file is missing or unreadable.
    """
    description, path = _describe(source)
    checker = _Checker(endpoint=endpoint, max_requests=max_requests, max_bytes=max_bytes, max_problems=max_problems)
    try:
        if isinstance(source, (str, os.PathLike)):
            _validate_path(description, checker)
        else:
            _read_lines(source, checker)
        checker.finish()
    except _Stop:
        pass
    checker.raise_if_problems(description)
    return checker.summary(path)


def _validate_path(path: str, checker: _Checker) -> None:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        checker.add(None, "file_not_found", f"no such file: {path}; check the path (and that the task wrote it)")
        raise _Stop from None
    except OSError as exc:
        checker.add(None, "unreadable_file", f"cannot read {path}: {exc.strerror or exc}")
        raise _Stop from None
    if os.path.isdir(path):
        checker.add(None, "unreadable_file", f"{path} is a directory, not a file")
        raise _Stop
    if size > checker.max_bytes:
        checker.too_large(size, exact=True)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below; open() is patched by tests
    except OSError as exc:
        checker.add(None, "unreadable_file", f"cannot read {path}: {exc.strerror or exc}")
        raise _Stop from None
    with stream:
        _read_lines(stream, checker)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _request_object(request: BatchRequest | Mapping[str, Any], endpoint: str) -> dict[str, Any] | None:
    if isinstance(request, BatchRequest):
        return request.to_dict()
    if isinstance(request, Mapping):
        return {
            "custom_id": request.get("custom_id"),
            "method": request.get("method", "POST"),
            "url": request.get("url", endpoint),
            "body": request.get("body"),
        }
    return None


def write_batch_input(
    requests: Iterable[BatchRequest | Mapping[str, Any]],
    destination: _Path | BinaryIO | TextIO,
    *,
    endpoint: str,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_INPUT_BYTES,
    max_problems: int = _DEFAULT_MAX_PROBLEMS,
) -> InputSummary:
    """Write requests as a batch input file, checking each one with :func:`validate_batch_input`'s rules.

    Requests are consumed one at a time (a generator of 50,000 requests is never held in memory) and
    written to a temporary file first: a path destination is replaced atomically, and a stream only
    receives the bytes, once the whole input proved valid. An invalid input thus never leaves a
    half-written file for a later task to upload.

    :param requests: :class:`BatchRequest` objects, or mappings with ``custom_id`` and ``body`` (and
        optionally ``url`` and ``method``, which must then match ``endpoint`` and be ``POST``; other
        keys are not written).
    :param destination: a path (its directory must exist), or a binary or text stream.
    :param endpoint: the endpoint of the batch, e.g. ``/v1/chat/completions``; mappings without a
        ``url`` get it as written.
    :param max_requests: most requests allowed; raise it to 100,000 for Azure.
    :param max_bytes: largest file allowed, in bytes.
    :param max_problems: problems collected before stopping.
    :returns: the summary of the written file.
    :raises BatchInputError: listing every problem; nothing is written then.
    """
    description, path = _describe(destination)
    checker = _Checker(endpoint=endpoint, max_requests=max_requests, max_bytes=max_bytes, max_problems=max_problems)
    if isinstance(destination, (str, os.PathLike)):
        target = os.path.abspath(os.fspath(destination))
        fd, tmp_path = tempfile.mkstemp(
            dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as tmp:
                _write_lines(requests, tmp, checker, endpoint)
                checker.raise_if_problems(f"(not written to {description})")
                tmp.flush()
                os.fsync(tmp.fileno())
            _set_mode(tmp_path, target)
            os.replace(tmp_path, target)
        except BaseException:
            _unlink_quietly(tmp_path)
            raise
        return checker.summary(path)

    with tempfile.TemporaryFile() as tmp:
        _write_lines(requests, tmp, checker, endpoint)
        checker.raise_if_problems(f"(not written to {description})")
        tmp.seek(0)
        if _is_text(destination):
            text = io.TextIOWrapper(tmp, encoding="utf-8", newline="")
            shutil.copyfileobj(text, destination, _COPY_CHUNK)  # type: ignore[misc]
            text.detach()
        else:
            shutil.copyfileobj(tmp, destination, _COPY_CHUNK)  # type: ignore[misc]
    return checker.summary(path)


def _write_lines(
    requests: Iterable[BatchRequest | Mapping[str, Any]], out: IO[bytes], checker: _Checker, endpoint: str
) -> None:
    try:
        for request in requests:
            if checker.count_past_limit():
                continue
            obj = _request_object(request, endpoint)
            if obj is None:
                checker.lines += 1
                checker.requests += 1
                checker.add(
                    checker.lines,
                    "not_an_object",
                    f"request {checker.lines} is a {type(request).__name__}; "
                    "pass a BatchRequest or a mapping with custom_id and body",
                )
                continue
            try:
                line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError, RecursionError) as exc:
                checker.lines += 1
                checker.requests += 1
                checker.add(checker.lines, "invalid_json", f"the request cannot be written as JSON: {exc}")
                continue
            raw = line.encode("utf-8", "surrogateescape") + b"\n"
            # The line is checked exactly as validate_batch_input would read it back.
            checker.feed(raw)
            if not checker.problems:
                out.write(raw)
        checker.finish()
    except _Stop:
        pass


def _is_text(stream: object) -> bool:
    if isinstance(stream, io.TextIOBase):
        return True
    mode = getattr(stream, "mode", None)
    return isinstance(mode, str) and "b" not in mode


def _set_mode(tmp_path: str, target: str) -> None:
    # mkstemp creates the file 0600; keep the mode of the file replaced, else a usual 0644.
    try:
        mode = os.stat(target).st_mode & 0o777
    except OSError:
        mode = 0o644
    os.chmod(tmp_path, mode)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# --------------------------------------------------------------------------------------------------
# Request builders
# --------------------------------------------------------------------------------------------------


def _pairs(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    if isinstance(items, Mapping):
        yield from items.items()
    else:
        yield from items


def _with_extra(body: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra_body:
        clash = sorted(set(body) & set(extra_body))
        if clash:
            # Silently letting one win would hide a mistake (e.g. a second model in extra_body).
            raise ValueError(f"extra_body must not set {', '.join(clash)}: pass them as arguments instead")
        body.update(extra_body)
    return body


def build_chat_requests(
    prompts: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    model: str,
    system: str | None = None,
    max_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> Iterator[BatchRequest]:
    """Yield one ``/v1/chat/completions`` request per prompt, lazily (feed it to :func:`write_batch_input`).

    :param prompts: ``custom_id -> user prompt``, as a mapping or as pairs (pairs let a generator
        stream prompts from a database without building a dict).
    :param model: the model (on Azure: the Global-Batch deployment name), the same for every request.
    :param system: an optional system message put before each prompt.
    :param max_tokens: an optional ``max_tokens`` cap (newer reasoning models want
        ``max_completion_tokens`` instead: pass it in ``extra_body``).
    :param extra_body: further body fields (``temperature``, ``response_format``...), copied into every
        request; it may not set a field given by another argument.
    :raises ValueError: when ``extra_body`` sets ``model``, ``messages`` or ``max_tokens``.
    """
    for custom_id, prompt in _pairs(prompts):
        messages: list[dict[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        yield BatchRequest(custom_id, _with_extra(body, extra_body), CHAT_COMPLETIONS)


def build_embedding_requests(
    texts: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    model: str,
    extra_body: Mapping[str, Any] | None = None,
) -> Iterator[BatchRequest]:
    """Yield one ``/v1/embeddings`` request per text, lazily.

    :param texts: ``custom_id -> text to embed``, as a mapping or as pairs.
    :param model: the embedding model, the same for every request.
    :param extra_body: further body fields (``dimensions``, ``encoding_format``...).
    :raises ValueError: when ``extra_body`` sets ``model`` or ``input``.
    """
    for custom_id, text in _pairs(texts):
        body: dict[str, Any] = {"model": model, "input": text}
        yield BatchRequest(custom_id, _with_extra(body, extra_body), EMBEDDINGS)


def build_responses_requests(
    inputs: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    model: str,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> Iterator[BatchRequest]:
    """Yield one ``/v1/responses`` request per input, lazily.

    :param inputs: ``custom_id -> input``; an input is a prompt string or a list of input items.
    :param model: the model, the same for every request.
    :param instructions: optional system-level instructions for every request.
    :param max_output_tokens: optional cap on generated tokens.
    :param extra_body: further body fields (``reasoning``, ``text``...).
    :raises ValueError: when ``extra_body`` sets a field given by another argument.
    """
    for custom_id, value in _pairs(inputs):
        body: dict[str, Any] = {"model": model, "input": value}
        if instructions is not None:
            body["instructions"] = instructions
        if max_output_tokens is not None:
            body["max_output_tokens"] = max_output_tokens
        yield BatchRequest(custom_id, _with_extra(body, extra_body), RESPONSES)


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def _as_mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


@dataclass(frozen=True)
class BatchResult:
    """The result of one request: one line of a batch's output or error file.

    :param custom_id: the request's ``custom_id``, to match results to inputs (they come in any order).
    :param id: the API's ``batch_req_...`` id of the request.
    :param status_code: HTTP status of the request, ``None`` when it never ran (e.g. expired).
    :param request_id: the request's ``request_id``, to quote to OpenAI support.
    :param body: the endpoint's response body (for an HTTP error, ``{"error": {...}}``).
    :param error: what went wrong: the line's ``error`` (``batch_expired``...) or, for an HTTP error,
        the body's ``error``; ``None`` for a success.
    """

    custom_id: str
    id: str | None = None
    status_code: int | None = None
    request_id: str | None = None
    body: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = field(default=None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchResult:
        """Build a result from an output or error line's object.

        :raises ValueError: when ``custom_id`` is missing or not a string.
        """
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str):
            raise ValueError(f"no string custom_id (got {_show(custom_id)})")
        response = _as_mapping(data.get("response")) or {}
        body = _as_mapping(response.get("body"))
        status = response.get("status_code")
        status_code = status if isinstance(status, int) and not isinstance(status, bool) else None
        error = _as_mapping(data.get("error"))
        if error is None and body is not None and (status_code is None or status_code >= 400):
            error = _as_mapping(body.get("error"))
        request_id = response.get("request_id")
        return cls(
            custom_id=custom_id,
            id=str(data["id"]) if data.get("id") is not None else None,
            status_code=status_code,
            request_id=str(request_id) if request_id is not None else None,
            body=body,
            error=error,
        )

    def to_dict(self) -> dict[str, Any]:
        """The line's shape again (an HTTP error's ``error`` stays inside the body)."""
        in_body = self.body is not None and self.error is not None and self.body.get("error") is self.error
        response = None
        if self.status_code is not None or self.body is not None:
            response = {"status_code": self.status_code, "request_id": self.request_id, "body": self.body}
        return {
            "id": self.id,
            "custom_id": self.custom_id,
            "response": response,
            "error": None if in_body else self.error,
        }

    @property
    def ok(self) -> bool:
        """True when the request got a 2xx response and no error."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def error_code(self) -> str | None:
        """The error's ``code``, else its ``type`` (HTTP errors often have a null code), else ``None``."""
        if self.error is None:
            return None
        code = self.error.get("code") or self.error.get("type")
        return str(code) if code is not None else None

    @property
    def error_message(self) -> str | None:
        """The error's message, or ``None`` for a success."""
        if self.error is None:
            return None
        message = self.error.get("message")
        return str(message) if message is not None else None

    @property
    def text(self) -> str | None:
        """The generated text: a chat completion's first choice, or a response's ``output_text`` parts.

        ``None`` for other endpoints, failures, and completions without text (e.g. only tool calls).
        """
        body = self.body
        if body is None or self.error is not None:
            return None
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = _as_mapping(choices[0].get("message"))
            content = message.get("content") if message is not None else choices[0].get("text")
            return content if isinstance(content, str) else None
        output = body.get("output")
        if isinstance(output, list):
            parts = [
                part["text"]
                for item in output
                if isinstance(item, Mapping) and isinstance(item.get("content"), list)
                for part in item["content"]
                if isinstance(part, Mapping) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
            ]
            return "".join(parts) if parts else None
        return None

    @property
    def embedding(self) -> list[float] | None:
        """The first embedding of an ``/v1/embeddings`` result (base64 ones decoded), else ``None``."""
        if self.body is None or self.error is not None:
            return None
        data = self.body.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
            return None
        vector = data[0].get("embedding")
        if isinstance(vector, list):
            return [float(x) for x in vector]
        if isinstance(vector, str):  # encoding_format="base64": little-endian float32
            floats = array("f")
            floats.frombytes(base64.b64decode(vector))
            if sys.byteorder != "little":
                floats.byteswap()
            return floats.tolist()
        return None


def iter_results(lines: Iterable[str | bytes], *, source: str | None = None) -> Iterator[BatchResult]:
    """Parse output or error file lines lazily, skipping blank lines.

    :param lines: the file's lines, as text or bytes (a file object opened in either mode works).
    :param source: name of the file, put into error messages.
    :raises ValueError: for a line that is not UTF-8, not JSON, or has no ``custom_id``, naming its
        1-based line number.
    """
    where = f"{source} " if source else ""
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8") if isinstance(line, bytes) else line
            if not text.strip():
                continue
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            yield BatchResult.from_dict(data)
        except (ValueError, RecursionError) as exc:
            # JSONDecodeError and UnicodeDecodeError are ValueErrors too.
            raise ValueError(f"Malformed batch result on {where}line {number}: {exc}") from exc


def iter_results_file(path: _Path) -> Iterator[BatchResult]:
    """Stream the results of an output or error file, one line at a time; the file is closed at the end.

    :raises ValueError: for a malformed line, naming the file and line.
    """
    with open(path, "rb") as stream:
        yield from iter_results(stream, source=os.fspath(path))


def read_results(*sources: _Path | BinaryIO | Iterable[str]) -> dict[str, BatchResult]:
    """Read output and error files into one ``custom_id -> result`` map.

    Pass both files of a batch (either may be missing from a batch: pass only those it has) to see
    every request's fate in one place; missing keys are requests that have no result.

    :param sources: paths, binary streams, or iterables of lines.
    :raises ValueError: for a malformed line, or a ``custom_id`` found twice (the API never returns a
        request twice, so files of two different batches were probably mixed).
    """
    results: dict[str, BatchResult] = {}
    seen_in: dict[str, str] = {}
    for index, source in enumerate(sources, start=1):
        if isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
            items = iter_results_file(source)
        else:
            described = getattr(source, "name", None)
            name = described if isinstance(described, str) else f"source {index}"
            items = iter_results(source, source=name)
        for result in items:
            if result.custom_id in results:
                raise ValueError(
                    f"custom_id {_show(result.custom_id)} appears twice (in {seen_in[result.custom_id]} and "
                    f"{name}); were files of different batches mixed?"
                )
            results[result.custom_id] = result
            seen_in[result.custom_id] = name
    return results
