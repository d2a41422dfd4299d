"""A pre-flight upper bound of what a batch input will cost, built while the file is validated.

How each request is bounded:

* **Input tokens <= the UTF-8 bytes of the request's line.** OpenAI's tokenizers are byte-level BPE: every
  token stands for at least one byte of the text it encodes, so a text never has more tokens than bytes.
  The line holds every text field of the request as JSON (quotes, escapes and keys only add bytes), and its
  JSON punctuation and keys (``{"role":"user","content":...}`` is 29 bytes) outweigh the few special tokens
  that the chat format adds per message (3-4) and per reply (3). Non-text inputs are the exception: an image
  or a file given by URL or id costs tokens that its bytes do not bound, so requests holding them are
  counted and named in the estimate instead of silently under-estimated.
* **Output tokens <= the request's completion-token limit** (``max_completion_tokens``, else ``max_tokens``
  on chat and completions; ``max_output_tokens`` on responses), times the completions it is billed for:
  ``n`` choices per prompt (on completions the larger of ``n`` and ``best_of``, since ``best_of`` completions
  are generated and billed server side), times the prompts of a completions request whose ``prompt`` is a
  list (of strings or token arrays). The limit includes reasoning tokens. A request without a limit is
  bounded by the model's largest completion from the price table. Embeddings have no output tokens. Which
  fields count for which endpoint is the endpoint registry's
  (:data:`~airflow_provider_openai_batch.endpoints.ENDPOINTS`).
* Every input token is priced as uncached: the cache discount is not known before the run.

The pass only adds the bounds up, per model; prices (and the largest completion of each model) are applied
once, at the end. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from airflow_provider_openai_batch.endpoints import ENDPOINTS, endpoint_spec
from airflow_provider_openai_batch.pricing import PriceTable, default_price_table, usd

__all__ = ["CostEstimate", "CostEstimator", "RequestBound", "bound_request", "budget_problem"]

#: Content-part types whose tokens are not bounded by their bytes (images, audio and files by reference).
_MEDIA_TYPES = frozenset({"image_url", "input_image", "input_audio", "input_file", "file", "image", "audio"})


@dataclass(frozen=True)
class RequestBound:
    """Upper bounds for one request.

    :param input_tokens: tokens of the prompt, at most.
    :param output_tokens: tokens of the completion(s), at most; ``None`` when the request sets no limit
        (the model's largest completion applies, times ``choices``).
    :param choices: completions billed per request: prompts times ``n`` (or ``best_of`` on completions).
    :param media: the request holds an image, audio or file part whose tokens its bytes do not bound.
    """

    input_tokens: int
    output_tokens: int | None
    choices: int = 1
    media: bool = False


def _has_media(items: object) -> bool:
    """Whether ``messages`` (chat) or ``input`` (responses) holds a non-text part. Strings are text.

    Exact ``type()`` checks (the body is parsed JSON, so only plain dicts and lists occur): this runs on
    every line of the validating pass.
    """
    if type(items) is not list:
        return False
    for item in items:
        if type(item) is not dict:
            continue
        content = item.get("content")
        if type(content) is list:
            for part in content:
                if type(part) is dict and part.get("type") in _MEDIA_TYPES:
                    return True
        elif content is None and item.get("type") in _MEDIA_TYPES:
            return True
    return False


def _bound(endpoint: str | None, body: Mapping[str, Any], line: bytes) -> tuple[int | None, int, bool] | None:
    """``(output limit or None, choices, media)`` of one request; ``None`` for an unsupported endpoint."""
    spec = endpoint_spec(endpoint)
    if spec is None:
        return None
    media = _has_media(body.get("messages")) or _has_media(body.get("input"))
    if not spec.output_limits:  # embeddings: input only
        return 0, 1, media
    return spec.output_limit(body), spec.completions(body), media


def bound_request(endpoint: str, body: Mapping[str, Any], line: bytes) -> RequestBound | None:
    """Upper bounds of one request's tokens; ``None`` for an endpoint that cannot be bounded.

    :param endpoint: the batch endpoint in ``/v1/...`` form.
    :param body: the request's ``body``.
    :param line: the request's line as UTF-8 bytes: its length bounds the input tokens (see the module doc).
    """
    bound = _bound(endpoint, body, line)
    if bound is None:
        return None
    limit, choices, media = bound
    return RequestBound(len(line), limit, choices, media)


@dataclass(frozen=True)
class CostEstimate:
    """An upper bound of what a batch input costs, at batch prices.

    :param model: the file's model.
    :param endpoint: the file's endpoint.
    :param requests: requests counted.
    :param input_tokens: upper bound of the input tokens.
    :param output_tokens: upper bound of the output tokens; ``None`` when it cannot be bounded (requests
        without a limit and a model without ``max_output_tokens`` in the table, or an unsupported endpoint).
    :param requests_without_limit: requests that set no completion-token limit (bounded by the model's
        largest completion, which usually drives the estimate).
    :param requests_with_media: requests with image, audio or file parts, whose tokens are not bounded.
    :param cost_usd: upper bound of the cost; ``None`` when the model has no price or a bound is missing.
    :param input_cost_usd: share of ``cost_usd`` from input tokens.
    :param output_cost_usd: share of ``cost_usd`` from output tokens.
    :param priced_as: the price table entry used.
    :param prices_as_of: date of the prices used.
    :param prices_source: source of the prices used.
    :param note: why there is no cost, when there is none.
    """

    model: str | None
    endpoint: str | None
    requests: int
    input_tokens: int
    output_tokens: int | None
    requests_without_limit: int
    requests_with_media: int
    cost_usd: float | None
    input_cost_usd: float | None = None
    output_cost_usd: float | None = None
    priced_as: str | None = None
    prices_as_of: str | None = None
    prices_source: str | None = None
    note: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostEstimate:
        """Rebuild an estimate from :meth:`to_dict` output (e.g. pulled from XCom)."""

        def count(key: str) -> int:
            return int(data.get(key) or 0)

        def opt(key: str) -> Any:
            return data.get(key)

        return cls(
            model=opt("model"),
            endpoint=opt("endpoint"),
            requests=count("requests"),
            input_tokens=count("input_tokens"),
            output_tokens=opt("output_tokens"),
            requests_without_limit=count("requests_without_limit"),
            requests_with_media=count("requests_with_media"),
            cost_usd=opt("cost_usd"),
            input_cost_usd=opt("input_cost_usd"),
            output_cost_usd=opt("output_cost_usd"),
            priced_as=opt("priced_as"),
            prices_as_of=opt("prices_as_of"),
            prices_source=opt("prices_source"),
            note=opt("note"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for XCom."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def drivers(self) -> str:
        """What makes the estimate as large as it is, in words."""
        parts = []
        if self.cost_usd is not None and self.output_cost_usd is not None and self.input_cost_usd is not None:
            parts.append(f"input {usd(self.input_cost_usd)} for <= {self.input_tokens:,} tokens")
            parts.append(f"output {usd(self.output_cost_usd)} for <= {self.output_tokens or 0:,} tokens")
        if self.requests_without_limit:
            parts.append(
                f"{self.requests_without_limit:,} of {self.requests:,} requests set no completion-token limit "
                "(max_completion_tokens / max_tokens / max_output_tokens), so each is bounded by the model's "
                "largest completion; set a limit to lower the estimate"
            )
        if self.requests_with_media:
            parts.append(
                f"{self.requests_with_media:,} requests hold image, audio or file parts, whose tokens are NOT in "
                "the bound"
            )
        return "; ".join(parts)

    def describe(self) -> str:
        """The one log line."""
        if self.cost_usd is None:
            head = f"Cost estimate: unknown ({self.note})"
        else:
            head = (
                f"Cost estimate: at most {usd(self.cost_usd)} at batch prices for {self.requests:,} requests "
                f"(model {self.model}, priced as {self.priced_as}, prices as of {self.prices_as_of})"
            )
        drivers = self.drivers()
        return f"{head}; {drivers}" if drivers else head


@dataclass
class _Sums:
    """The bounds of one model's requests, added up."""

    requests: int = 0
    input_tokens: int = 0
    limited_output_tokens: int = 0
    #: completions (requests x choices) that set no limit.
    unlimited_completions: int = 0
    requests_without_limit: int = 0
    requests_with_media: int = 0


class CostEstimator:
    """Adds up the per-request bounds during the validating pass; :meth:`result` prices the sums.

    Sums are kept per model: a batch runs one model, but a multi-batch job's input may hold several.
    """

    def __init__(self) -> None:
        self.sums: dict[str | None, _Sums] = {}
        self.unsupported_endpoint: str | None = None

    def add(self, endpoint: str | None, body: Mapping[str, Any], line: bytes) -> None:
        """Count one request (``endpoint`` in ``/v1/...`` form, ``body`` its request object, ``line`` its bytes)."""
        model = body.get("model")
        key = model if type(model) is str else None
        sums = self.sums.get(key)
        if sums is None:
            sums = self.sums[key] = _Sums()
        sums.requests += 1
        bound = _bound(endpoint, body, line)
        if bound is None:
            self.unsupported_endpoint = endpoint or "unknown"
            return
        limit, choices, media = bound
        sums.input_tokens += len(line)
        if limit is None:
            sums.unlimited_completions += choices
            sums.requests_without_limit += 1
        else:
            sums.limited_output_tokens += limit * choices
        if media:
            sums.requests_with_media += 1

    def result(self, endpoint: str | None, table: PriceTable | None = None) -> CostEstimate:
        """The estimate of everything added, priced with ``table`` (the shipped one when ``None``)."""
        table = table or default_price_table()
        every = list(self.sums.values())
        models = sorted(str(m) for m in self.sums)
        unpriced = CostEstimate(
            model=", ".join(models) or None,
            endpoint=endpoint,
            requests=sum(s.requests for s in every),
            input_tokens=sum(s.input_tokens for s in every),
            output_tokens=None,
            requests_without_limit=sum(s.requests_without_limit for s in every),
            requests_with_media=sum(s.requests_with_media for s in every),
            cost_usd=None,
        )
        if self.unsupported_endpoint is not None:
            supported = ", ".join(ENDPOINTS)
            return replace(unpriced, note=f"no estimate for endpoint {self.unsupported_endpoint} (only {supported})")
        if not self.sums:
            return replace(unpriced, output_tokens=0, cost_usd=0.0, input_cost_usd=0.0, output_cost_usd=0.0)
        output_tokens: int | None = 0
        in_cost = out_cost = 0.0
        names, dates, sources, notes = [], set(), set(), []
        for model, sums in sorted(self.sums.items(), key=lambda item: str(item[0])):
            found = table.price_or_warn(model, what="cost estimate")
            if found is None:
                notes.append(f"model {model!r} is not in the price table")
                if sums.unlimited_completions:
                    output_tokens = None
                elif output_tokens is not None:
                    output_tokens += sums.limited_output_tokens
                continue
            name, price = found
            model_output = sums.limited_output_tokens
            if sums.unlimited_completions:
                if price.max_output_tokens is None:
                    notes.append(
                        f"requests without a completion-token limit, and no max_output_tokens for {name!r} in the table"
                    )
                    output_tokens = None
                    continue
                model_output += sums.unlimited_completions * price.max_output_tokens
            if output_tokens is not None:
                output_tokens += model_output
            in_cost += sums.input_tokens * price.input / 1_000_000
            out_cost += model_output * price.output / 1_000_000
            names.append(name)
            dates.add(price.as_of or "unknown")
            sources.add(price.source or "unknown")
        if notes:
            return replace(unpriced, output_tokens=output_tokens, note="; ".join(notes))
        return replace(
            unpriced,
            output_tokens=output_tokens,
            cost_usd=_round_up(in_cost + out_cost),
            input_cost_usd=_round_up(in_cost),
            output_cost_usd=_round_up(out_cost),
            priced_as=", ".join(names),
            prices_as_of=", ".join(sorted(dates)),
            prices_source="; ".join(sorted(sources)),
        )


def _round_up(usd: float) -> float:
    """Round to the micro-dollar, upwards: an upper bound stays one."""
    return -(-round(usd * 1_000_000, 3) // 1) / 1_000_000


def budget_problem(estimate: CostEstimate, max_cost_usd: float | None) -> str | None:
    """Why a batch with this estimate must not start under ``max_cost_usd``; ``None`` when it may.

    A cap that cannot be checked (no price, no bound, inputs whose tokens are not bounded) is a problem
    too: a cap is only worth setting if it holds.
    """
    if max_cost_usd is None:
        return None
    cap = usd(max_cost_usd)
    if estimate.cost_usd is None:
        return (
            f"Cannot check max_cost_usd={cap}: the cost of this input cannot be estimated ({estimate.note}). "
            "Nothing was uploaded. Give the model's prices with 'prices' (or the connection extra 'prices'), "
            "or drop max_cost_usd."
        )
    if estimate.requests_with_media:
        return (
            f"Cannot check max_cost_usd={cap}: {estimate.requests_with_media:,} requests hold image, audio or "
            "file parts, whose tokens the estimate cannot bound. Nothing was uploaded. Drop max_cost_usd for "
            "such inputs."
        )
    if estimate.cost_usd > max_cost_usd:
        return (
            f"The estimated cost, at most {usd(estimate.cost_usd)} ({estimate.requests:,} requests, model "
            f"{estimate.model}, prices as of {estimate.prices_as_of}), exceeds max_cost_usd={cap}. Nothing was "
            f"uploaded. What drives the estimate: {estimate.drivers()}."
        )
    return None
