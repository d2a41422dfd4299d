"""``BatchStatus``: the one table of what a batch's status means for a caller that waits on it.

The sensor, the trigger and the operators all ask it rather than keeping their own lists of statuses.
"""

from __future__ import annotations

import enum


class BatchStatus(str, enum.Enum):
    """Status of a batch, with what each one means for a caller that waits on it.

    ``cancelling`` is *not* terminal: it lasts up to ten minutes and ends in ``cancelled``.
    """

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True when the batch will never change status again."""
        return self in _TERMINAL

    @property
    def is_success(self) -> bool:
        """True only for ``completed``: every request was processed (some may still have failed)."""
        return self is BatchStatus.COMPLETED

    @property
    def may_have_partial_output(self) -> bool:
        """True for terminal statuses whose finished requests are kept in an output file."""
        return self in (BatchStatus.EXPIRED, BatchStatus.CANCELLED)

    @property
    def is_cancellable(self) -> bool:
        """True while a cancel request can still change the outcome."""
        return not self.is_terminal and self is not BatchStatus.CANCELLING

    @property
    def is_known(self) -> bool:
        """False for a status this version does not know (the API adds some; gateways invent their own)."""
        return self._name_ != _UNKNOWN_NAME

    @classmethod
    def parse(cls, value: object) -> BatchStatus:
        """Parse a status string, tolerating case and surrounding spaces (Azure sends ``Validating``).

        A status this version does not know parses too, as a status that is not terminal (so a waiting task
        keeps waiting, and says so) and keeps its text in :attr:`value`.
        """
        return cls(str(value).strip().lower())

    @classmethod
    def _missing_(cls, value: object) -> BatchStatus:
        # An unknown status becomes a member outside the enum's list (named UNKNOWN): not terminal, and
        # written back unchanged by ``to_dict``.
        member = str.__new__(cls, str(value))
        member._name_ = _UNKNOWN_NAME
        member._value_ = str(value)
        return member


_UNKNOWN_NAME = "UNKNOWN"

_TERMINAL = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
