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
  on chat and completions; ``max_output_tokens`` on responses), times ``n`` choices (``best_of`` on
  completions). The limit includes reasoning tokens. A request without a limit is bounded by the model's
  largest completion from the price table. Embeddings have no output tokens.
* Every input token is priced as uncached: the cache discount is not known before the run.

Token counts are model-independent, so the pass only adds them up; prices are applied once, at the end.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from airflow_provider_openai_batch.pricing import PriceTable, default_price_table, usd

__all__ = ["CostEstimate", "CostEstimator", "RequestBound", "bound_request"]

#: Endpoints whose requests can be bounded, and the body fields holding each one's completion-token limit.
_OUTPUT_LIMITS: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
    "/v1/embeddings": (),
}
#: Content-part types whose tokens are not bounded by their bytes (images, audio and files by reference).
_MEDIA_TYPES = frozenset({"image_url", "input_image", "input_audio", "input_file", "file", "image", "audio"})


@dataclass(frozen=True)
class RequestBound:
    """Upper bounds for one request.

    :param input_tokens: tokens of the prompt, at most.
    :param output_tokens: tokens of the completion(s), at most; ``None`` when the request sets no limit
        (the model's largest completion applies, times ``choices``).
    :param choices: completions billed per request (``n``, or ``best_of`` on completions).
    :param media: the request holds an image, audio or file part whose tokens its bytes do not bound.
    """

    input_tokens: int
    output_tokens: int | None
    choices: int = 1
    media: bool = False


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def _has_media(value: object, depth: int = 0) -> bool:
    """Whether a content tree holds a non-text part (looked for only where prompts live, a few levels deep)."""
    if depth > 6:
        return False
    if isinstance(value, Mapping):
        if value.get("type") in _MEDIA_TYPES:
            return True
        return any(_has_media(v, depth + 1) for k, v in value.items() if k in ("content", "input", "messages"))
    if isinstance(value, list):
        return any(_has_media(v, depth + 1) for v in value)
    return False


def bound_request(endpoint: str, body: Mapping[str, Any], line_bytes: int) -> RequestBound | None:
    """Upper bounds of one request's tokens; ``None`` for an endpoint that cannot be bounded.

    :param endpoint: the batch endpoint in ``/v1/...`` form.
    :param body: the request's ``body``.
    :param line_bytes: UTF-8 size of the request's line (bounds the input tokens, see the module doc).
    """
    limits = _OUTPUT_LIMITS.get(endpoint)
    if limits is None:
        return None
    media = _has_media(body.get("messages")) or _has_media(body.get("input"))
    if not limits:  # embeddings: input only
        return RequestBound(line_bytes, 0, 1, media)
    limit = next((v for v in (_positive_int(body.get(k)) for k in limits) if v is not None), None)
    choices = _positive_int(body.get("n")) or 1
    if endpoint == "/v1/completions":
        choices = max(choices, _positive_int(body.get("best_of")) or 1)
    return RequestBound(line_bytes, limit, choices, media)


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
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

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


class CostEstimator:
    """Adds up the per-request bounds during the validating pass; :meth:`result` prices the sums."""

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0
        self.limited_output_tokens = 0
        #: completions (requests x choices) that set no limit.
        self.unlimited_completions = 0
        self.requests_without_limit = 0
        self.requests_with_media = 0
        self.unsupported_endpoint: str | None = None

    def add(self, endpoint: str | None, body: Mapping[str, Any], line_bytes: int) -> None:
        """Count one valid request (``endpoint`` in ``/v1/...`` form)."""
        self.requests += 1
        bound = bound_request(endpoint, body, line_bytes) if endpoint else None
        if bound is None:
            self.unsupported_endpoint = endpoint or "unknown"
            return
        self.input_tokens += bound.input_tokens
        if bound.output_tokens is None:
            self.unlimited_completions += bound.choices
            self.requests_without_limit += 1
        else:
            self.limited_output_tokens += bound.output_tokens * bound.choices
        self.requests_with_media += bound.media

    def _estimate(self, model: str | None, endpoint: str | None, output_tokens: int | None, note: str) -> CostEstimate:
        return CostEstimate(
            model=model,
            endpoint=endpoint,
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=output_tokens,
            requests_without_limit=self.requests_without_limit,
            requests_with_media=self.requests_with_media,
            cost_usd=None,
            note=note,
        )

    def result(self, model: str | None, endpoint: str | None, table: PriceTable | None = None) -> CostEstimate:
        """The estimate of everything added, priced with ``table`` (the shipped one when ``None``)."""
        table = table or default_price_table()
        if self.unsupported_endpoint is not None:
            supported = ", ".join(_OUTPUT_LIMITS)
            note = f"no estimate for endpoint {self.unsupported_endpoint} (only {supported})"
            return self._estimate(model, endpoint, None, note)
        found = table.price_or_warn(model, what="cost estimate")
        if found is None:
            output = self.limited_output_tokens if not self.unlimited_completions else None
            return self._estimate(model, endpoint, output, f"model {model!r} is not in the price table")
        name, price = found
        output_tokens = self.limited_output_tokens
        if self.unlimited_completions:
            if price.max_output_tokens is None:
                note = f"requests without a completion-token limit, and no max_output_tokens for {name!r} in the table"
                return self._estimate(model, endpoint, None, note)
            output_tokens += self.unlimited_completions * price.max_output_tokens
        in_cost = self.input_tokens * price.input / 1_000_000
        out_cost = output_tokens * price.output / 1_000_000
        return replace(
            self._estimate(model, endpoint, output_tokens, ""),
            cost_usd=_round_up(in_cost + out_cost),
            input_cost_usd=_round_up(in_cost),
            output_cost_usd=_round_up(out_cost),
            priced_as=name,
            prices_as_of=price.as_of,
            prices_source=price.source,
            note=None,
        )


def _round_up(usd: float) -> float:
    """Round to the micro-dollar, upwards: an upper bound stays one."""
    return -(-round(usd * 1_000_000, 3) // 1) / 1_000_000
