"""Create an object at most once, although the answer to its create can be lost.

A create (``POST /batches``, ``POST /files``) is never resent blindly. The transport repeats it only when the
server surely did nothing (a refused connection, a 429). After any other failure the object may exist anyway,
so :class:`CreateOnce` looks for it first and sends again only when it is not there, within the connection's
retry budget; when the server may still be working on it (a timeout), it only looks, for as long as the answer
itself was allowed to take, and never sends again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from airflow_provider_openai_batch.exceptions import OpenAIBatchAPIError
from airflow_provider_openai_batch.hooks._errors import is_ambiguous, may_still_be_working
from airflow_provider_openai_batch.hooks._transport import FailedAttempt, RetryPolicy

__all__ = ["CreateOnce"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class CreateOnce(Generic[T]):
    """One create that results in at most one object.

    :param what: the kind of object, for messages (``batch``, ``file``).
    :param send: sends the create once (the transport's own safe retries included) and parses the answer.
    :param find: looks for an object this create may have made, ``None`` when there is none; without it an
        ambiguous failure is raised, saying so.
    :param policy: the connection's retry policy: how often, and after how long, to send again.
    :param grace: seconds to keep looking for an object whose create timed out (the read timeout).
    """

    def __init__(
        self,
        *,
        what: str,
        send: Callable[[], T],
        find: Callable[[], T | None] | None,
        policy: RetryPolicy,
        grace: float,
    ) -> None:
        self.what = what
        self.send = send
        self.find = find
        self.policy = policy
        self.grace = grace

    def run(self) -> T:
        """The created object, or the one an earlier, failed-looking attempt of this call created."""
        resends = 0
        while True:
            try:
                return self.send()
            except OpenAIBatchAPIError as exc:
                if not is_ambiguous(exc):
                    raise
                existing = self.find() if self.find is not None else None
                if existing is not None:
                    log.warning("%s; the %s was created anyway, reusing it", exc, self.what)
                    return existing
                if self.find is None:
                    exc.add_hint(f"the {self.what} may have been created; not sent again, to avoid a duplicate")
                    raise
                if may_still_be_working(exc):
                    existing = self._await_late_object()
                    if existing is not None:
                        log.warning("%s; the %s was created late, reusing it", exc, self.what)
                        return existing
                    exc.add_hint(
                        f"the server may still create the {self.what}; not sent again, to avoid a duplicate:"
                        " a retry of the task looks for it before creating another"
                    )
                    raise
                if resends >= self.policy.max_retries:
                    exc.add_hint(f"the {self.what} may have been created; not sent again, to avoid a duplicate")
                    raise
                delay = self.policy.retry_delay(FailedAttempt(failure="read"), resends)
                resends += 1
                log.warning("%s; no %s was created, sending again in %.1fs", exc, self.what, delay)
                time.sleep(delay)

    def _await_late_object(self) -> T | None:
        """Look for an object whose create timed out, for up to ``grace`` seconds; ``None`` if it never shows."""
        assert self.find is not None
        deadline = time.monotonic() + self.grace
        step = min(1.0, max(0.05, self.grace / 10))
        log.warning(
            "The create of a %s timed out; looking for it for up to %.1fs instead of sending again",
            self.what,
            self.grace,
        )
        while time.monotonic() < deadline:
            time.sleep(min(step, max(0.0, deadline - time.monotonic())))
            try:
                existing = self.find()
            except OpenAIBatchAPIError as exc:
                log.warning("Looking for the %s failed: %s", self.what, exc)
                continue
            if existing is not None:
                return existing
        return None
