"""Typed, immutable models of the OpenAI Batch and Files API objects.

Every model parses real responses tolerantly (explicit ``null``, missing optional keys, unknown new
keys) and turns back into plain JSON with :meth:`to_dict` so that it can travel through XCom and
trigger events. :class:`BatchStatus` is the one table that says what a status means; the sensor,
the trigger and the operators all ask it rather than keeping their own lists.

- :mod:`.status`: :class:`BatchStatus`.
- :mod:`.batch`: :class:`Batch` and its parts (:class:`RequestCounts`, :class:`Usage`, :class:`BatchErrors`),
  :class:`BatchPage`.
- :mod:`.files`: :class:`FileObject`, :class:`DeletedFile`.
- :mod:`._fields`: the tolerant readers of the API's fields they all use.
"""

from __future__ import annotations

from .batch import Batch, BatchError, BatchErrors, BatchPage, RequestCounts, Usage
from .files import DeletedFile, FileObject
from .status import BatchStatus

__all__ = [
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchPage",
    "BatchStatus",
    "DeletedFile",
    "FileObject",
    "RequestCounts",
    "Usage",
]
