"""Read a batch's output and error files back as :class:`BatchResult` objects keyed by ``custom_id``."""

from __future__ import annotations

import base64
import json
import os
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

from airflow_provider_openai_batch.batch_input.checker import show
from airflow_provider_openai_batch.batch_input.reading import iter_lines

__all__ = ["BatchResult", "iter_results", "iter_results_file", "read_results"]

_Path = str | os.PathLike[str]


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
            raise ValueError(f"no string custom_id (got {show(custom_id)})")
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


def iter_results(lines: Iterable[str | bytes] | IO[Any], *, source: str | None = None) -> Iterator[BatchResult]:
    """Parse output or error file lines lazily, skipping blank lines.

    :param lines: the file's lines, as text or bytes; or a file object opened in either mode, read with
        ``read(size)`` only (so wrappers that do not iterate, such as Airflow 3.1.0's object-storage files,
        work too).
    :param source: name of the file, put into error messages.
    :raises ValueError: for a line that is not UTF-8, not JSON, or has no ``custom_id``, naming its
        1-based line number.
    """
    where = f"{source} " if source else ""
    items: Iterable[str | bytes] = iter_lines(cast(IO[Any], lines)) if hasattr(lines, "read") else lines
    for number, line in enumerate(items, start=1):
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
                    f"custom_id {show(result.custom_id)} appears twice (in {seen_in[result.custom_id]} and "
                    f"{name}); were files of different batches mixed?"
                )
            results[result.custom_id] = result
            seen_in[result.custom_id] = name
    return results
