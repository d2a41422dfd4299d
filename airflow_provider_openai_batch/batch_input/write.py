"""Write requests as a batch input file, checked line by line, replacing the target only when all is valid."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import IO, Any, BinaryIO, TextIO

from airflow_provider_openai_batch.batch_input.checker import DEFAULT_MAX_PROBLEMS, LineChecker, StopCheck
from airflow_provider_openai_batch.batch_input.limits import MAX_EMBEDDING_INPUTS, MAX_INPUT_BYTES, MAX_REQUESTS
from airflow_provider_openai_batch.batch_input.reading import describe_source
from airflow_provider_openai_batch.batch_input.records import BatchRequest, InputSummary

__all__ = ["write_batch_input"]

_COPY_CHUNK = 1024 * 1024


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
    destination: str | os.PathLike[str] | BinaryIO | TextIO,
    *,
    endpoint: str,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_INPUT_BYTES,
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
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
    :param max_embedding_inputs: most embedding inputs across all requests of an ``/v1/embeddings`` file
        (an ``input`` list counts each element).
    :param max_problems: problems collected before stopping.
    :returns: the summary of the written file.
    :raises BatchInputError: listing every problem; nothing is written then.
    """
    description, path = describe_source(destination)
    checker = LineChecker(
        endpoint=endpoint,
        max_requests=max_requests,
        max_bytes=max_bytes,
        max_problems=max_problems,
        max_embedding_inputs=max_embedding_inputs,
    )
    if isinstance(destination, (str, os.PathLike)):
        target = os.path.abspath(os.fspath(destination))
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):  # name the user's path, not the hidden temp file mkstemp would name
            raise FileNotFoundError(errno.ENOENT, f"the folder of {target} does not exist; create it first", folder)
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
    requests: Iterable[BatchRequest | Mapping[str, Any]], out: IO[bytes], checker: LineChecker, endpoint: str
) -> None:
    try:
        for request in requests:
            if checker.count_past_limit():
                continue
            obj = _request_object(request, endpoint)
            if obj is None:
                checker.reject_request(
                    "not_an_object",
                    f"request {checker.lines + 1} is a {type(request).__name__}; "
                    "pass a BatchRequest or a mapping with custom_id and body",
                )
                continue
            try:
                line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError, RecursionError) as exc:
                checker.reject_request("invalid_json", f"the request cannot be written as JSON: {exc}")
                continue
            raw = line.encode("utf-8", "surrogateescape") + b"\n"
            # The line is checked exactly as validate_batch_input would read it back.
            checker.feed(raw)
            if not checker.problems:
                out.write(raw)
        checker.finish()
    except StopCheck:
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
