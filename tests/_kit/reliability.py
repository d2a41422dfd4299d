"""Shared state and helpers of the reliability suite.

``REGISTRY`` collects what the tests actually did (faults injected, calls exercised, bad inputs tried,
secret searches, duplicates found); ``tests/reliability/conftest.py`` prints it at the end of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Registry:
    """Counts of what the suite did, filled in by the tests themselves."""

    #: (fault, call) -> short outcome, for the matrix.
    matrix: dict[tuple[str, str], str] = field(default_factory=dict)
    faults: set[str] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)
    injections: int = 0
    bad_inputs: list[str] = field(default_factory=list)
    #: where the API key was searched for (a description each) and how often it was found.
    secret_places: list[str] = field(default_factory=list)
    secrets_found: int = 0
    #: objects created beyond the one intended (batches and uploaded files).
    duplicates: int = 0
    duplicate_checks: int = 0
    crash_runs: int = 0
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cell(self, fault: str, call: str, outcome: str) -> None:
        with self.lock:
            self.faults.add(fault)
            self.calls.add(call)
            self.matrix[(fault, call)] = outcome

    def bad_input(self, name: str) -> None:
        with self.lock:
            self.bad_inputs.append(name)

    def searched(self, place: str, text: str | bytes, secrets: Iterable[str]) -> int:
        """Count occurrences of each secret in ``text``; record the place; return the count."""
        data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        found = sum(data.count(secret.encode()) for secret in secrets if secret)
        with self.lock:
            self.secret_places.append(place)
            self.secrets_found += found
        return found

    def duplicates_seen(self, extra: int) -> None:
        with self.lock:
            self.duplicate_checks += 1
            self.duplicates += max(0, extra)


REGISTRY = Registry()


@dataclass
class Bounded:
    """The result of :func:`run_bounded`."""

    value: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0
    hung: bool = False


def run_bounded(fn: Callable[[], Any], limit: float) -> Bounded:
    """Run ``fn`` in a thread and wait at most ``limit`` seconds: a hang is reported, not waited out."""
    out = Bounded()

    def target() -> None:
        try:
            out.value = fn()
        except BaseException as exc:  # reported to the test
            out.error = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True, name="bounded-call")
    thread.start()
    thread.join(limit)
    out.elapsed = time.monotonic() - started
    out.hung = thread.is_alive()
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
