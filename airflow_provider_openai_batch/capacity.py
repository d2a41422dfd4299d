"""The organization's enqueued limits, as the client budgets them: tokens and requests in flight per model.

The service limits what an organization may have enqueued per model (input tokens, and requests) but does not
expose the limits through the API, so a job budgets against figures the user gives: on the connection (extras
``max_enqueued_tokens`` and ``max_enqueued_requests``) or on the operator, which replaces the connection's.
A figure is one number for every model, or a mapping ``{model: number}`` (``"*"`` for the models not named);
a model that no figure covers is not limited.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANY_MODEL", "EnqueuedLimit", "EnqueuedLimits"]

#: The key of a per-model mapping that covers every model not named in it.
ANY_MODEL = "*"


def _positive(value: object, where: str) -> int:
    """``value`` as an integer >= 1 (a whole number given as text or float is accepted), else ValueError."""
    number: object = value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            number = float(text) if "." in text or "e" in text.lower() else int(text)
        except ValueError:
            number = None
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class EnqueuedLimit:
    """One enqueued limit (tokens or requests), per model.

    :param default: the limit of every model not in ``per_model``; ``None``: those models are not limited.
    :param per_model: ``(model, limit)`` pairs, sorted (a tuple: connection settings are hashed).
    """

    default: int | None = None
    per_model: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, value: object, *, name: str) -> EnqueuedLimit:
        """Read a limit as given on an operator or in a connection extra.

        :param value: ``None`` (no limit), a positive integer (also as text), or a mapping ``{model: integer}``
            (also as a JSON object in text) where ``"*"`` covers the models not named.
        :param name: the argument or extra's name, for the error message.
        :raises ValueError: naming ``name`` and the bad value.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            return cls()
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"{name} is not a valid JSON object: {value!r}") from None
        if isinstance(value, Mapping):
            if not value:
                raise ValueError(f"{name} is an empty mapping: name a model (or '*' for every model) and its limit")
            limits: dict[str, int] = {}
            for model, limit in value.items():
                if not isinstance(model, str) or not model.strip():
                    raise ValueError(f"{name}: model names must be non-empty strings, got {model!r}")
                limits[model.strip()] = _positive(limit, f"{name}[{model!r}]")
            default = limits.pop(ANY_MODEL, None)
            return cls(default=default, per_model=tuple(sorted(limits.items())))
        return cls(default=_positive(value, name))

    def for_model(self, model: str | None) -> int | None:
        """The limit of ``model``, ``None`` when it is not limited."""
        return dict(self.per_model).get(model, self.default) if model is not None else self.default

    @property
    def is_set(self) -> bool:
        return self.default is not None or bool(self.per_model)

    @property
    def smallest(self) -> int | None:
        """The smallest limit of any model: one shard of any model fits it alone."""
        values = [limit for _, limit in self.per_model] + ([self.default] if self.default is not None else [])
        return min(values) if values else None

    def to_json(self) -> int | dict[str, int] | None:
        """As given: one number, a mapping, or ``None``."""
        if not self.per_model:
            return self.default
        return {**dict(self.per_model), **({ANY_MODEL: self.default} if self.default is not None else {})}


@dataclass(frozen=True)
class EnqueuedLimits:
    """Both enqueued limits a job budgets against.

    :param tokens: input tokens enqueued per model (a shard's estimate: its size in bytes).
    :param requests: requests enqueued per model (a shard's lines).
    """

    tokens: EnqueuedLimit = field(default_factory=EnqueuedLimit)
    requests: EnqueuedLimit = field(default_factory=EnqueuedLimit)

    @property
    def is_set(self) -> bool:
        return self.tokens.is_set or self.requests.is_set

    def overridden(
        self, *, tokens: EnqueuedLimit | None = None, requests: EnqueuedLimit | None = None
    ) -> EnqueuedLimits:
        """These limits with each one given (and set) replacing this one's: an operator's arguments over a
        connection's extras."""
        return EnqueuedLimits(
            tokens=tokens if tokens is not None and tokens.is_set else self.tokens,
            requests=requests if requests is not None and requests.is_set else self.requests,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_enqueued_tokens": self.tokens.to_json(), "max_enqueued_requests": self.requests.to_json()}

    def describe(self) -> str:
        """For log lines: the limits that are set, e.g. ``max_enqueued_requests=500``."""
        return ", ".join(f"{name}={value}" for name, value in self.to_dict().items() if value is not None) or "none"
