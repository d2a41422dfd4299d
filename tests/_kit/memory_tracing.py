"""The traced peak of Python allocations during one call: how the streaming tests check "constant memory"."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def traced_peak(call: Callable[[], T]) -> tuple[T, int]:
    """Run ``call`` and return its result and the peak of traced allocations made meanwhile, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


__all__ = ["traced_peak"]
