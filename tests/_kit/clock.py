"""A clock a test controls: real time until a condition holds, then an hour (or any jump) later.

The emulator runs on real time (a batch stalls at 60 % after its phases); the job and its trigger read this
clock. A deadline half an hour ahead passes the moment the emulator has reached the state the test waits for
("every shard stalled"): no test sleeps for a deadline's length, and no busy machine can make the deadline
come before that state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

__all__ = ["JUMP", "JumpClock"]

#: How far the clock jumps once its condition holds.
JUMP = 3600.0


class JumpClock:
    """Epoch seconds: the real time, plus :data:`JUMP` from the first reading at which ``gate()`` is true.

    :param gate: the state the test waits for before time may pass the deadline; ``None``: jump at once.
    """

    def __init__(self, gate: Callable[[], bool] | None = None) -> None:
        self.gate = gate
        self.jumped = gate is None

    def now(self) -> float:
        if not self.jumped and self.gate is not None and self.gate():
            self.jumped = True
        return time.time() + (JUMP if self.jumped else 0.0)

    def attach(self, operator: Any) -> Any:
        """Give ``operator`` (a Job operator) this clock; returns it."""
        operator._clock = self.now
        return operator

    def patch_triggers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The job trigger reads this clock too."""
        import airflow_provider_openai_batch.triggers.job as job_trigger

        monkeypatch.setattr(job_trigger, "time", SimpleNamespace(time=self.now, monotonic=time.monotonic))
