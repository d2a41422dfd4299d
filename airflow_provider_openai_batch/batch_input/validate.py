"""Check a batch input file against the Batch API's rules in one streaming pass, before upload."""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from airflow_provider_openai_batch.batch_input.checker import (
    DEFAULT_MAX_PROBLEMS,
    LineChecker,
    RequestCallback,
    StopCheck,
)
from airflow_provider_openai_batch.batch_input.limits import MAX_EMBEDDING_INPUTS, MAX_INPUT_BYTES, MAX_REQUESTS
from airflow_provider_openai_batch.batch_input.reading import describe_source, iter_lines
from airflow_provider_openai_batch.batch_input.records import InputSummary

if TYPE_CHECKING:
    from airflow_provider_openai_batch.pricing import PriceTable

__all__ = ["validate_batch_input"]


def validate_batch_input(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    endpoint: str | None = None,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_INPUT_BYTES,
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
    on_request: RequestCallback | None = None,
    prices: PriceTable | None = None,
) -> InputSummary:
    """Check a batch input file against the Batch API's rules before it is uploaded.

    The file is read once, in fixed-size chunks cut into lines: memory stays small whatever the file
    size (only the ``custom_id`` of each line is kept, to find duplicates), and any file object with
    ``read(size)`` works, object-storage files included. A path whose size is over ``max_bytes`` is
    rejected from its size alone, without being read.

    :param source: a path, or a binary stream read from its current position (its size is then
        checked while reading).
    :param endpoint: the endpoint the batch will be created for, in either form (``/chat/completions``
        or ``/v1/chat/completions``); every line's ``url`` must match it. ``None``: every line must
        share the first line's url.
    :param max_requests: most requests allowed; raise it to 100,000 for Azure.
    :param max_bytes: largest file allowed, in bytes.
    :param max_embedding_inputs: most embedding inputs across all requests of an ``/v1/embeddings`` file
        (an ``input`` list counts each element).
    :param max_problems: problems collected before the check stops (the error is then ``truncated``),
        so that a wholly broken file does not produce an error message of a million lines.
    :param on_request: called with ``(line number, request object)`` for every line that is a JSON
        object, during the same pass (e.g. to estimate tokens without reading the file twice).
    :param prices: the price table for the cost estimate (see :mod:`~airflow_provider_openai_batch.pricing`);
        the shipped one when ``None``.
    :returns: what the file holds, including its SHA-256 and ``estimate``, an upper bound of its cost
        counted in the same pass (see :mod:`~airflow_provider_openai_batch.estimate`).
    :raises BatchInputError: listing every problem (with its 1-based line and code) when any is found,
        or when the file is missing or unreadable.
    """
    description, path = describe_source(source)
    checker = LineChecker(
        endpoint=endpoint,
        max_requests=max_requests,
        max_bytes=max_bytes,
        max_problems=max_problems,
        on_request=on_request,
        max_embedding_inputs=max_embedding_inputs,
    )
    try:
        if isinstance(source, (str, os.PathLike)):
            _validate_path(description, checker)
        else:
            _feed(source, checker)
        checker.finish()
    except StopCheck:
        pass
    checker.raise_if_problems(description)
    return checker.summary(path, prices)


def _feed(stream: IO[Any], checker: LineChecker) -> None:
    for raw in iter_lines(stream, limit=checker.max_bytes):
        checker.feed(raw)


def _validate_path(path: str, checker: LineChecker) -> None:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        checker.add(None, "file_not_found", f"no such file: {path}; check the path (and that the task wrote it)")
        raise StopCheck from None
    except OSError as exc:
        checker.add(None, "unreadable_file", f"cannot read {path}: {exc.strerror or exc}")
        raise StopCheck from None
    if os.path.isdir(path):
        checker.add(None, "unreadable_file", f"{path} is a directory, not a file")
        raise StopCheck
    if size > checker.max_bytes:
        checker.too_large(size, exact=True)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below; open() is patched by tests
    except OSError as exc:
        checker.add(None, "unreadable_file", f"cannot read {path}: {exc.strerror or exc}")
        raise StopCheck from None
    with stream:
        _feed(stream, checker)
