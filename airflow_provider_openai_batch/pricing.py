"""What a batch costs: the price table and the cost of a batch's reported ``usage``.

The table ships as data (``prices.json`` next to this module): per model, USD per 1M tokens at Batch API
prices for input, cached input and output, plus the model's largest completion (which the pre-flight
estimate needs for requests that set no limit), with the date and source of the figures. Azure
deployments and gateways have their own prices and model names, so the table can be overridden, from the
connection's extra ``prices`` and from an operator's ``prices`` argument (the argument wins).

A model that is not in the table gets no cost and one warning: a guessed price is worse than none.

Standard library only, like :mod:`~airflow_provider_openai_batch.batch_input`, so DAG files can import it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

__all__ = [
    "CostReport",
    "ModelPrice",
    "PriceTable",
    "PricingError",
    "batch_cost",
    "default_price_table",
    "resolve_price_table",
    "usd",
]

log = logging.getLogger(__name__)

#: ``-2024-07-18`` or ``-0125``: the snapshot suffixes that map to a model's base entry.
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
_PER = 1_000_000


class PricingError(ValueError):
    """A price table or override is malformed (names the entry and the field)."""


def _price(origin: str, model: str, entry: Mapping[str, Any], key: str, *, required: bool) -> float | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PricingError(
            f"{origin}: model {model!r}: {key!r} must be a number >= 0 (USD per 1M tokens), got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class ModelPrice:
    """Batch prices of one model, in USD per 1M tokens.

    :param input: price of an input token that was not served from the prompt cache.
    :param output: price of an output token (reasoning tokens are output tokens).
    :param cached_input: price of a cached input token; ``None`` when unknown, and cached tokens are
        then costed at ``input`` (never less than the bill).
    :param max_output_tokens: the model's largest completion; bounds the estimate of a request that sets
        no completion-token limit. ``None``: unknown, so such a request cannot be estimated.
    :param as_of: the date the figures were taken.
    :param source: where they come from (a URL, or which override set them).
    """

    input: float
    output: float
    cached_input: float | None = None
    max_output_tokens: int | None = None
    as_of: str | None = None
    source: str | None = None

    @classmethod
    def from_dict(cls, model: str, entry: object, *, origin: str, as_of: str | None, source: str | None) -> ModelPrice:
        if not isinstance(entry, Mapping):
            raise PricingError(
                f"{origin}: model {model!r}: expected an object with 'input' and 'output', got {entry!r}"
            )
        unknown = set(entry) - {"input", "cached_input", "output", "max_output_tokens", "as_of", "source"}
        if unknown:
            raise PricingError(f"{origin}: model {model!r}: unknown keys {sorted(unknown)}")
        max_out = entry.get("max_output_tokens")
        if max_out is not None and (isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 0):
            raise PricingError(
                f"{origin}: model {model!r}: 'max_output_tokens' must be an integer >= 0, got {max_out!r}"
            )
        return cls(
            input=_price(origin, model, entry, "input", required=True) or 0.0,
            output=_price(origin, model, entry, "output", required=True) or 0.0,
            cached_input=_price(origin, model, entry, "cached_input", required=False),
            max_output_tokens=max_out,
            as_of=str(entry.get("as_of") or as_of or "") or None,
            source=str(entry.get("source") or source or "") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "cached_input": self.cached_input,
            "output": self.output,
            "max_output_tokens": self.max_output_tokens,
            "as_of": self.as_of,
            "source": self.source,
        }


@dataclass(frozen=True)
class PriceTable:
    """Model name to :class:`ModelPrice`. Look models up with :meth:`lookup`.

    :param models: the entries, keyed by lower-case model name.
    :param as_of: date of the shipped figures (entries from overrides carry their own).
    :param source: where the shipped figures come from.
    """

    models: Mapping[str, ModelPrice]
    as_of: str | None = None
    source: str | None = None
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "price table") -> PriceTable:
        """Read the shipped table's shape: ``{"as_of", "source", "models": {name: {...}}}``."""
        models = data.get("models")
        if not isinstance(models, Mapping):
            raise PricingError(f"{origin}: expected a 'models' object")
        as_of, source = data.get("as_of"), data.get("source")
        entries = {
            str(name).lower(): ModelPrice.from_dict(str(name), entry, origin=origin, as_of=as_of, source=source)
            for name, entry in models.items()
        }
        return cls(models=entries, as_of=as_of, source=source)

    def with_overrides(self, overrides: object, *, origin: str) -> PriceTable:
        """A copy where the models of ``overrides`` replace (or add to) this table's entries.

        :param overrides: ``{model: {"input", "output", "cached_input"?, "max_output_tokens"?}}``, or
            the full shape ``{"as_of"?, "source"?, "models": {...}}``; a JSON string of either is
            accepted too (a connection's extra may hold one). ``None`` or empty: no change.
        :param origin: named in errors and used as the entries' ``source`` when they give none, e.g.
            ``"connection 'openai_default' extra 'prices'"``.
        :raises PricingError: naming the entry and field that are wrong.
        """
        if overrides is None or overrides == "" or overrides == {}:
            return self
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except ValueError as exc:
                raise PricingError(f"{origin}: not valid JSON: {exc}") from None
        if not isinstance(overrides, Mapping):
            raise PricingError(f"{origin}: expected an object of model -> prices, got {type(overrides).__name__}")
        full = "models" in overrides  # the shipped table's shape, with its own as_of and source
        as_of = overrides.get("as_of") if full else None
        source = overrides.get("source") if full else None
        models = overrides.get("models", overrides)
        if not isinstance(models, Mapping):
            raise PricingError(f"{origin}: 'models' must be an object of model -> prices")
        merged = dict(self.models)
        for name, entry in models.items():
            merged[str(name).lower()] = ModelPrice.from_dict(
                str(name), entry, origin=origin, as_of=as_of, source=source or origin
            )
        return replace(self, models=merged, _warned=set())

    def lookup(self, model: str | None) -> tuple[str, ModelPrice] | None:
        """``(entry name, price)`` of ``model``: the exact name first, then without a snapshot date.

        ``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini`` unless the table holds the dated name
        itself (``gpt-4o-2024-05-13`` had its own price). Fine-tuned models (``ft:...``) are not mapped.
        """
        if not model:
            return None
        name = model.strip().lower()
        if name in self.models:
            return name, self.models[name]
        base = _DATE_SUFFIX.sub("", name)
        if base != name and base in self.models:
            return base, self.models[base]
        return None

    def price_or_warn(self, model: str | None, *, what: str = "cost") -> tuple[str, ModelPrice] | None:
        """:meth:`lookup`, logging one warning per unknown model for this table."""
        found = self.lookup(model)
        if found is None:
            key = model or ""
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "No %s for model %r: it is not in the price table (prices as of %s). Add it with the "
                    "operator's 'prices' argument or the connection extra 'prices', e.g. "
                    '{"%s": {"input": 1.25, "output": 5.0}} (USD per 1M tokens at batch prices).',
                    what,
                    model,
                    self.as_of,
                    model or "model",
                )
        return found


def _load_default() -> PriceTable:
    text = resources.files(__package__ or "airflow_provider_openai_batch").joinpath("prices.json").read_text("utf-8")
    return PriceTable.from_dict(json.loads(text), origin="prices.json")


_DEFAULT: PriceTable | None = None


def default_price_table() -> PriceTable:
    """The table shipped with the package (read once per process)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = _load_default()
    return replace(_DEFAULT, _warned=set())


def resolve_price_table(
    *, conn_id: str, connection_prices: object = None, operator_prices: object = None
) -> PriceTable:
    """The shipped table, overridden by the connection extra's ``prices``, then by an operator's ``prices``.

    :raises PricingError: naming which override is malformed and how.
    """
    table = default_price_table().with_overrides(connection_prices, origin=f"connection {conn_id!r} extra 'prices'")
    return table.with_overrides(operator_prices, origin="operator argument 'prices'")


def usd(amount: float) -> str:
    """Dollars for a log line: cents, or micro-dollars for amounts under a cent."""
    return f"${amount:,.2f}" if amount >= 0.01 else f"${amount:.6f}"


def _usd(tokens: int, per_million: float) -> float:
    return tokens * per_million / _PER


@dataclass(frozen=True)
class CostReport:
    """Tokens a batch used and what they cost at batch prices (``cost_usd`` is ``None`` without a price).

    ``input_tokens`` includes ``cached_input_tokens``; ``output_tokens`` includes ``reasoning_tokens``,
    as in the API's ``usage``.
    """

    model: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    priced_as: str | None = None
    #: the price used; ``None`` for several batches priced differently (see :meth:`total`).
    price: ModelPrice | None = None
    note: str | None = None
    #: batches the report adds up.
    batches: int = 1

    @classmethod
    def unpriced(cls, model: str | None, usage: Any, note: str) -> CostReport:
        """The tokens of ``usage`` (a :class:`~airflow_provider_openai_batch.models.Usage`) without a cost."""
        inp = int(usage.input_tokens)
        cached = min(int(usage.cached_tokens), inp)
        return cls(model, inp, cached, int(usage.output_tokens), int(usage.reasoning_tokens), None, note=note)

    @classmethod
    def total(cls, reports: Sequence[CostReport]) -> CostReport:
        """The reports of several batches (a job's shards) as one: tokens and costs added up.

        The cost is ``None`` if any batch has none: a partial sum would read as the whole bill.
        """
        unpriced = [r for r in reports if r.cost_usd is None]
        prices = {r.price for r in reports}
        return cls(
            model=", ".join(sorted({str(r.model) for r in reports})),
            input_tokens=sum(r.input_tokens for r in reports),
            cached_input_tokens=sum(r.cached_input_tokens for r in reports),
            output_tokens=sum(r.output_tokens for r in reports),
            reasoning_tokens=sum(r.reasoning_tokens for r in reports),
            cost_usd=None if unpriced else sum(r.cost_usd or 0.0 for r in reports),
            priced_as=", ".join(sorted({r.priced_as for r in reports if r.priced_as})) or None,
            price=prices.pop() if len(prices) == 1 else None,
            note="; ".join(sorted({r.note for r in unpriced if r.note})) or None,
            batches=sum(r.batches for r in reports),
        )

    @property
    def prices_as_of(self) -> str | None:
        return self.price.as_of if self.price else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for XCom."""
        return {
            "model": self.model,
            "batches": self.batches,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            # Nano-dollars: exact for any real bill, without float noise in the XCom.
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 9),
            "priced_as": self.priced_as,
            "prices_per_1m_tokens": (
                None
                if self.price is None
                else {"input": self.price.input, "cached_input": self.price.cached_input, "output": self.price.output}
            ),
            "prices_as_of": self.prices_as_of,
            "prices_source": self.price.source if self.price else None,
            "note": self.note,
        }

    def describe(self) -> str:
        """The one log line: tokens, then the cost and where its prices come from."""
        tokens = (
            f"{self.input_tokens:,} input tokens ({self.cached_input_tokens:,} cached), "
            f"{self.output_tokens:,} output tokens ({self.reasoning_tokens:,} reasoning)"
        )
        what = "Batch usage" if self.batches == 1 else f"Usage of {self.batches} batches"
        if self.cost_usd is None:
            return f"{what} (model {self.model}): {tokens}; cost unknown: {self.note}"
        where = (
            f"prices as of {self.price.as_of}, source: {self.price.source}"
            if self.price
            else "each model at its own prices"
        )
        cost = f"cost {usd(self.cost_usd)} at batch prices (priced as {self.priced_as}, {where})"
        return f"{what} (model {self.model}): {tokens}; {cost}"


def batch_cost(model: str | None, usage: Any, table: PriceTable | None = None) -> CostReport | None:
    """The cost of a batch from its ``usage`` (a :class:`~airflow_provider_openai_batch.models.Usage`).

    :param model: the batch's model (``Batch.model``, else the input file's model).
    :param usage: ``None`` when the API reported none (batches created before 2025-09-07): then ``None``.
    :param table: prices; the shipped table when ``None``.
    """
    if usage is None:
        return None
    table = table or default_price_table()
    found = table.price_or_warn(model)
    if found is None:
        note = f"model {model!r} is not in the price table" if model else "the batch does not name its model"
        return CostReport.unpriced(model, usage, note)
    name, price = found
    report = CostReport.unpriced(model, usage, "")
    inp, cached, out = report.input_tokens, report.cached_input_tokens, report.output_tokens
    cached_price = price.input if price.cached_input is None else price.cached_input
    cost = _usd(inp - cached, price.input) + _usd(cached, cached_price) + _usd(out, price.output)
    return replace(report, cost_usd=cost, priced_as=name, price=price, note=None)
