"""Clocks used by the emulator: real wall-clock time, or a manual clock tests advance by hand."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Anything with a ``now()`` returning unix seconds as a float."""

    def now(self) -> float: ...


class RealClock:
    """Wall-clock time (``time.time()``)."""

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "RealClock()"


class ManualClock:
    """A clock that only moves when :meth:`advance` (or :meth:`set`) is called. Thread-safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (must be >= 0); returns the new time."""
        if seconds < 0:
            raise ValueError("ManualClock cannot go backwards")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def set(self, timestamp: float) -> None:
        """Jump to an absolute time (not earlier than the current one)."""
        with self._lock:
            if timestamp < self._now:
                raise ValueError("ManualClock cannot go backwards")
            self._now = float(timestamp)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now()!r})"
