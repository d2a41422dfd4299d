"""The batch endpoints: one registry entry each, read by the checker, the builders, the estimate and the split.

Adding an endpoint means adding one :class:`Endpoint` to :data:`ENDPOINTS` (and, for the emulator, its
answers): the line checks, the pre-flight estimate and the job's shard limits all follow from the entry.
An endpoint missing here is still accepted by the checker (the service decides), but it gets no
endpoint-specific check and no estimate. Standard library only, and no import of this package: the
input checks and the estimate both read it, so it sits below them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHAT_COMPLETIONS",
    "COMPLETIONS",
    "EMBEDDINGS",
    "ENDPOINTS",
    "RESPONSES",
    "Endpoint",
    "TokenNote",
    "count_items",
    "endpoint_spec",
    "normalize_endpoint",
]


def count_items(value: object) -> int:
    """How many prompts or inputs one body field holds: a list of strings (or of token lists) counts each; else 1.

    A list of integers is one token array, so one item; an empty or missing value counts 1, so that a
    bound never reads 0 for a request the service will run or reject.
    """
    if isinstance(value, list) and value and not all(isinstance(item, int) for item in value):
        return len(value)
    return 1


@dataclass(frozen=True)
class TokenNote:
    """A warning (never a failure) on token-cap fields an endpoint ignores, rejects or deprecates.

    :param code: the warning's code; lines sharing it are reported once, with how many there are.
    :param fields: the body fields that must all be present for the warning to apply.
    :param message: what to change, in words.
    """

    code: str
    fields: frozenset[str]
    message: str

    def applies(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` sets every one of :attr:`fields` (a set comparison: this runs on every line)."""
        return body.keys() >= self.fields


@dataclass(frozen=True)
class Endpoint:
    """What the package knows of one batch endpoint, so that no consumer keeps its own table.

    :param path: the endpoint in ``/v1/...`` form, as lines' ``url`` and the batch carry it.
    :param output_limits: body fields capping one completion's tokens, the first set one wins (the
        estimate's output bound, the builders' token field); empty: no output tokens (embeddings).
    :param choices: body fields whose largest positive value is the completions generated per prompt
        (``n``; ``best_of`` on completions, generated and billed server side though fewer are returned).
    :param prompts: the body field holding one prompt or a list of prompts, each answered with its own
        completions (``prompt`` on completions); ``None``: one prompt per request.
    :param batch_inputs: the body field whose items count against the per-batch input limit (``input``
        on embeddings); ``None``: the endpoint has no such limit.
    :param token_notes: warnings about token-cap fields, checked on every line, in this order.
    """

    path: str
    output_limits: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    prompts: str | None = None
    batch_inputs: str | None = None
    token_notes: tuple[TokenNote, ...] = ()

    def completions(self, body: Mapping[str, Any]) -> int:
        """Completions one request is billed for: prompts times the largest of its ``choices`` fields."""
        per_prompt = 1
        for name in self.choices:  # a loop, not max() over a generator: this runs once per line
            value = body.get(name)
            if type(value) is int and value > per_prompt:
                per_prompt = value
        return per_prompt if self.prompts is None else count_items(body.get(self.prompts)) * per_prompt

    def output_limit(self, body: Mapping[str, Any]) -> int | None:
        """The request's completion-token cap, ``None`` when it sets none (0 is no cap: the API rejects it)."""
        for name in self.output_limits:
            limit = _positive_int(body.get(name))
            if limit is not None:
                return limit
        return None

    def inputs(self, body: Mapping[str, Any]) -> int:
        """What one request counts against the per-batch input limit; 0 for an endpoint without one."""
        return count_items(body.get(self.batch_inputs)) if self.batch_inputs is not None else 0


def _positive_int(value: object) -> int | None:
    # ``type() is int`` rather than isinstance: it leaves out bool, and this runs once per field per line.
    return value if type(value) is int and value > 0 else None


CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"

_MAX_TOKENS_DEPRECATED = (
    "body.max_tokens: reasoning models (o-series, gpt-5) reject it and OpenAI deprecates it for "
    "max_completion_tokens; keep it only for a gateway or model that needs it"
)


def _not_a_responses_field(name: str) -> TokenNote:
    return TokenNote(
        "token_limit_field", frozenset({name}), f"body.{name} is not a {RESPONSES} field: use max_output_tokens"
    )


#: Every supported endpoint, keyed by its ``/v1/...`` path; the order is the one messages list them in.
ENDPOINTS: dict[str, Endpoint] = {
    entry.path: entry
    for entry in (
        Endpoint(
            CHAT_COMPLETIONS,
            # OpenAI's current field first; the older one some gateways and older Azure API versions need.
            output_limits=("max_completion_tokens", "max_tokens"),
            choices=("n",),
            token_notes=(
                TokenNote("max_tokens", frozenset({"max_tokens"}), _MAX_TOKENS_DEPRECATED),
                TokenNote(
                    "both_token_limits",
                    frozenset({"max_tokens", "max_completion_tokens"}),
                    "body sets both max_tokens and max_completion_tokens; keep one",
                ),
            ),
        ),
        Endpoint(COMPLETIONS, output_limits=("max_tokens",), choices=("n", "best_of"), prompts="prompt"),
        Endpoint(
            RESPONSES,
            output_limits=("max_output_tokens",),
            # Not a responses field (the service rejects it); counted as before, so the bound never shrinks.
            choices=("n",),
            token_notes=(_not_a_responses_field("max_tokens"), _not_a_responses_field("max_completion_tokens")),
        ),
        Endpoint(EMBEDDINGS, batch_inputs="input"),
    )
}


def normalize_endpoint(url: str) -> str:
    """Return the ``/v1/...`` form of a batch endpoint or input-line ``url``.

    Azure shows endpoints and line urls without ``/v1`` (``/chat/completions``), OpenAI with it; both
    name the same endpoint, so they are compared in this one form.

    :param url: an endpoint such as ``/chat/completions``, ``/v1/chat/completions`` or ``v1/embeddings``.
    :raises ValueError: when ``url`` is not a non-empty string.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"An endpoint must be a non-empty string such as {CHAT_COMPLETIONS!r}, got {url!r}")
    path = url.strip()
    if not path.startswith("/"):
        path = "/" + path
    if path != "/v1" and not path.startswith("/v1/"):
        path = "/v1" + path
    return path


def endpoint_spec(endpoint: str | None) -> Endpoint | None:
    """The registry entry of ``endpoint``, ``None`` for one the package does not know.

    :param endpoint: the endpoint in ``/v1/...`` form (see :func:`normalize_endpoint`; this runs once per
        line, so it does not normalize again); ``None`` (not known yet) has no entry.
    """
    return ENDPOINTS.get(endpoint) if endpoint else None
