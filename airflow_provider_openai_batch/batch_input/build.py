"""Lazy request builders for chat, embeddings and responses, to feed :func:`write_batch_input`.

Each builder takes its url and token-cap field names from the endpoint's registry entry
(:data:`~airflow_provider_openai_batch.endpoints.ENDPOINTS`), so a line it builds is the shape the
checker and the estimate expect.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_openai_batch.batch_input.records import BatchRequest
from airflow_provider_openai_batch.endpoints import CHAT_COMPLETIONS, EMBEDDINGS, ENDPOINTS, RESPONSES

__all__ = ["TOKEN_FIELDS", "build_chat_requests", "build_embedding_requests", "build_responses_requests"]


def _pairs(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    if isinstance(items, Mapping):
        yield from items.items()
    else:
        yield from items


def _with_extra(body: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra_body:
        clash = sorted(set(body) & set(extra_body))
        if clash:
            # Silently letting one win would hide a mistake (e.g. a second model in extra_body).
            raise ValueError(f"extra_body must not set {', '.join(clash)}: pass them as arguments instead")
        body.update(extra_body)
    return body


#: The body fields a chat completion's token cap can be sent as: OpenAI's current one, and the older one that
#: some gateways and older Azure API versions still need (reasoning models reject it).
TOKEN_FIELDS = ENDPOINTS[CHAT_COMPLETIONS].output_limits
#: The one body field of a responses request's token cap.
_RESPONSES_TOKEN_FIELD = ENDPOINTS[RESPONSES].output_limits[0]


def build_chat_requests(
    prompts: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    model: str,
    system: str | None = None,
    max_tokens: int | None = None,
    token_field: str = "max_completion_tokens",  # noqa: S107 - a body field name, not a secret
    extra_body: Mapping[str, Any] | None = None,
) -> Iterator[BatchRequest]:
    """Yield one ``/v1/chat/completions`` request per prompt, lazily (feed it to :func:`write_batch_input`).

    :param prompts: ``custom_id -> user prompt``, as a mapping or as pairs (pairs let a generator
        stream prompts from a database without building a dict).
    :param model: the model (on Azure: the Global-Batch deployment name), the same for every request.
    :param system: an optional system message put before each prompt.
    :param max_tokens: an optional cap on generated tokens, sent as ``token_field``.
    :param token_field: ``max_completion_tokens`` (OpenAI's field; reasoning models accept only this one)
        or ``max_tokens`` (for a gateway or an older API version that knows only the old field).
    :param extra_body: further body fields (``temperature``, ``response_format``...), copied into every
        request; it may not set a field given by another argument.
    :raises ValueError: when ``extra_body`` sets ``model``, ``messages`` or the token field, or
        ``token_field`` is not one of :data:`TOKEN_FIELDS`.
    """
    if token_field not in TOKEN_FIELDS:
        raise ValueError(f"token_field must be one of {', '.join(TOKEN_FIELDS)}, got {token_field!r}")
    for custom_id, prompt in _pairs(prompts):
        messages: list[dict[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            body[token_field] = max_tokens
        yield BatchRequest(custom_id, _with_extra(body, extra_body), CHAT_COMPLETIONS)


def build_embedding_requests(
    texts: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    model: str,
    extra_body: Mapping[str, Any] | None = None,
) -> Iterator[BatchRequest]:
    """Yield one ``/v1/embeddings`` request per text, lazily.

    :param texts: ``custom_id -> text to embed``, as a mapping or as pairs.
    :param model: the embedding model, the same for every request.
    :param extra_body: further body fields (``dimensions``, ``encoding_format``...).
    :raises ValueError: when ``extra_body`` sets ``model`` or ``input``.
    """
    for custom_id, text in _pairs(texts):
        body: dict[str, Any] = {"model": model, "input": text}
        yield BatchRequest(custom_id, _with_extra(body, extra_body), EMBEDDINGS)


def build_responses_requests(
    inputs: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    model: str,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> Iterator[BatchRequest]:
    """Yield one ``/v1/responses`` request per input, lazily.

    :param inputs: ``custom_id -> input``; an input is a prompt string or a list of input items.
    :param model: the model, the same for every request.
    :param instructions: optional system-level instructions for every request.
    :param max_output_tokens: optional cap on generated tokens.
    :param extra_body: further body fields (``reasoning``, ``text``...).
    :raises ValueError: when ``extra_body`` sets a field given by another argument.
    """
    for custom_id, value in _pairs(inputs):
        body: dict[str, Any] = {"model": model, "input": value}
        if instructions is not None:
            body["instructions"] = instructions
        if max_output_tokens is not None:
            body[_RESPONSES_TOKEN_FIELD] = max_output_tokens
        yield BatchRequest(custom_id, _with_extra(body, extra_body), RESPONSES)
