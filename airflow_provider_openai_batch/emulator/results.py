"""Deterministic fake responses for batch request lines.

Rules (so tests can compute expected outputs):

* ``tokens(text) = max(1, ceil(len(text) / 4))`` (``len`` counts characters).
* ``echo(prompt) = "echo:" + sha256(prompt.encode("utf-8")).hexdigest()[:12] + " " + prompt[:64]``.
* ``/v1/chat/completions``: prompt = text of the **last** message with ``role == "user"`` (a string
  content, or the ``text`` of its ``text``/``input_text`` parts joined with ``""``; ``""`` if none).
  ``choices[0].message.content = echo(prompt)``; ``usage.prompt_tokens = tokens(all message texts joined
  with "")``, ``completion_tokens = tokens(content)``.
* ``/v1/responses``: prompt = ``input`` when it is a string, else the last ``role == "user"`` item's text
  (same part rules). ``output[0].content[0].text = echo(prompt)``; ``input_tokens = tokens(all input
  texts joined with "")``, ``output_tokens = tokens(text)``.
* ``/v1/completions``: prompt = ``prompt`` (a list is joined with ``""``); ``choices[0].text = echo(prompt)``.
* ``/v1/embeddings``: one embedding per input (a string or a list of strings; token arrays are
  ``json.dumps``-ed); ``embedding[i] = round(u32be(sha256(text)[4i:4i+4]) / 2**32 * 2 - 1, 6)`` for
  ``i`` in 0..7; ``prompt_tokens = total_tokens = sum(tokens(text))``.
* ``/v1/moderations``, ``/v1/images/generations``, ``/v1/images/edits``, ``/v1/videos``: small plausible
  bodies (see the code); ``input_tokens = tokens(prompt or input)``.
* A request **fails** when ``body["model"]`` ends with ``-fail`` or ``body["emulator_fail"] is True``: it
  gets ``status_code`` 400 and ``body = {"error": {...}}`` and goes to the error file.
* ``id = "batch_req_" + sha256(f"{batch_id}:{custom_id}").hexdigest()[:32]``,
  ``request_id = "req_" + sha256(f"req:{batch_id}:{custom_id}").hexdigest()[:32]``.
* Output order: sorted by ``sha256(custom_id)`` (:func:`order_key`), not input order.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


def echo(prompt: str) -> str:
    return f"echo:{sha(prompt)[:12]} {prompt[:64]}"


def order_key(custom_id: str) -> str:
    return sha(custom_id)


def line_id(batch_id: str, custom_id: str) -> str:
    return "batch_req_" + sha(f"{batch_id}:{custom_id}")[:32]


def line_request_id(batch_id: str, custom_id: str) -> str:
    return "req_" + sha(f"req:{batch_id}:{custom_id}")[:32]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return ""


def _messages_prompt(messages: Any) -> tuple[str, str]:
    """(last user message text, all message texts joined)."""
    if not isinstance(messages, list):
        return "", ""
    last_user = ""
    everything = []
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        text = _content_text(msg.get("content"))
        everything.append(text)
        if msg.get("role") == "user":
            last_user = text
    return last_user, "".join(everything)


def _str_or_join(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True)


def embedding_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [round(int.from_bytes(digest[4 * i : 4 * i + 4], "big") / 2**32 * 2 - 1, 6) for i in range(8)]


@dataclass(frozen=True)
class LineResult:
    """The outcome of one request line: HTTP status, response body, token usage."""

    status_code: int
    body: JSON
    input_tokens: int
    output_tokens: int

    @property
    def ok(self) -> bool:
        return self.status_code < 400


def should_fail(body: JSON) -> bool:
    model = body.get("model")
    return (isinstance(model, str) and model.endswith("-fail")) or body.get("emulator_fail") is True


def server_error(body: JSON, custom_id: str, line: int, draw: str = "") -> bool:
    """``body.emulator_error_rate`` (0..1): the share of such lines answered 500, drawn from the line's id, its
    line number and the batch's ``draw`` (its input file's SHA-256 and how many batches the emulator created
    earlier from the same content): a line sent again draws again, as a transient error would, even in a file
    identical to the last one, while the same sequence of files always draws the same (tests stay
    deterministic)."""
    rate = body.get("emulator_error_rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
        return False
    return int(sha(f"500:{draw}:{line}:{custom_id}")[:8], 16) / 2**32 < rate


def compute(
    endpoint: str, body: JSON, *, created: int, batch_id: str, custom_id: str, line: int = 0, draw: str = ""
) -> LineResult:
    """The deterministic response for one request ``body`` sent to ``endpoint`` (``line``: its 1-based line;
    ``draw``: the batch's key of the 500 draw, :func:`server_error`)."""
    model = body.get("model")
    model_s = model if isinstance(model, str) else "emulator-model"
    rid = sha(f"{batch_id}:{custom_id}")[:24]
    if server_error(body, custom_id, line, draw):
        err500 = {"message": "The server had an error processing your request.", "type": "server_error"}
        return LineResult(500, {"error": {**err500, "param": None, "code": None}}, 0, 0)
    if should_fail(body):
        err: JSON
        if isinstance(model, str) and model.endswith("-fail"):
            err = {
                "message": f"The model '{model}' does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        else:
            err = {
                "message": "This request failed on purpose (emulator_fail).",
                "type": "invalid_request_error",
                "param": None,
                "code": "emulator_forced_failure",
            }
        return LineResult(400, {"error": err}, 0, 0)

    ep = endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint
    if ep == "/v1/chat/completions":
        prompt, everything = _messages_prompt(body.get("messages"))
        content = echo(prompt)
        pt, ct = tokens(everything), tokens(content)
        return LineResult(
            200,
            {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion",
                "created": created,
                "model": model_s,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": pt,
                    "completion_tokens": ct,
                    "total_tokens": pt + ct,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": 0,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    },
                },
                "service_tier": "default",
                "system_fingerprint": None,
            },
            pt,
            ct,
        )
    if ep == "/v1/responses":
        inp = body.get("input")
        if isinstance(inp, str):
            prompt = everything = inp
        else:
            prompt, everything = _messages_prompt(inp)
        text = echo(prompt)
        it, ot = tokens(everything), tokens(text)
        return LineResult(
            200,
            {
                "id": f"resp_{rid}",
                "object": "response",
                "created_at": created,
                "status": "completed",
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model_s,
                "output": [
                    {
                        "type": "message",
                        "id": f"msg_{rid}",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "temperature": body.get("temperature", 1.0),
                "tool_choice": "auto",
                "tools": [],
                "top_p": body.get("top_p", 1.0),
                "usage": {
                    "input_tokens": it,
                    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                    "output_tokens": ot,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": it + ot,
                },
                "metadata": {},
            },
            it,
            ot,
        )
    if ep == "/v1/completions":
        prompt = _str_or_join(body.get("prompt"))
        text = echo(prompt)
        pt, ct = tokens(prompt), tokens(text)
        return LineResult(
            200,
            {
                "id": f"cmpl-{rid}",
                "object": "text_completion",
                "created": created,
                "model": model_s,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                "system_fingerprint": None,
            },
            pt,
            ct,
        )
    if ep == "/v1/embeddings":
        raw = body.get("input")
        inputs: list[str]
        if isinstance(raw, list) and raw and not all(isinstance(v, int) for v in raw):
            inputs = [v if isinstance(v, str) else json.dumps(v) for v in raw]
        elif isinstance(raw, str):
            inputs = [raw]
        else:
            inputs = [json.dumps(raw)]
        pt = sum(tokens(t) for t in inputs)
        return LineResult(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding_vector(t)} for i, t in enumerate(inputs)
                ],
                "model": model_s,
                "usage": {"prompt_tokens": pt, "total_tokens": pt},
            },
            pt,
            0,
        )
    if ep == "/v1/moderations":
        mod_raw = body.get("input")
        mod_inputs: list[Any] = mod_raw if isinstance(mod_raw, list) else [mod_raw]
        categories = [
            "harassment",
            "harassment/threatening",
            "hate",
            "hate/threatening",
            "illicit",
            "illicit/violent",
            "self-harm",
            "self-harm/instructions",
            "self-harm/intent",
            "sexual",
            "sexual/minors",
            "violence",
            "violence/graphic",
        ]
        pt = sum(tokens(_str_or_join(t)) for t in mod_inputs)
        return LineResult(
            200,
            {
                "id": f"modr-{rid}",
                "model": model_s,
                "results": [
                    {
                        "flagged": False,
                        "categories": dict.fromkeys(categories, False),
                        "category_scores": dict.fromkeys(categories, 0.0),
                        "category_applied_input_types": {c: ["text"] for c in categories},
                    }
                    for _ in mod_inputs
                ],
            },
            pt,
            0,
        )
    if ep in ("/v1/images/generations", "/v1/images/edits"):
        prompt = _str_or_join(body.get("prompt"))
        n_raw = body.get("n")
        n = n_raw if isinstance(n_raw, int) and n_raw > 0 else 1
        pt = tokens(prompt)
        image = base64.b64encode(hashlib.sha256(prompt.encode("utf-8")).digest()).decode("ascii")
        return LineResult(
            200,
            {
                "created": created,
                "data": [{"b64_json": image, "revised_prompt": None} for _ in range(n)],
                "usage": {
                    "input_tokens": pt,
                    "input_tokens_details": {"text_tokens": pt, "image_tokens": 0},
                    "output_tokens": 0,
                    "total_tokens": pt,
                },
            },
            pt,
            0,
        )
    if ep == "/v1/videos":
        prompt = _str_or_join(body.get("prompt"))
        return LineResult(
            200,
            {
                "id": f"video_{rid}",
                "object": "video",
                "model": model_s,
                "status": "completed",
                "progress": 100,
                "created_at": created,
                "completed_at": created,
                "expires_at": None,
                "prompt": prompt,
                "seconds": str(body.get("seconds", "4")),
                "size": str(body.get("size", "720x1280")),
                "remixed_from_video_id": None,
                "error": None,
            },
            tokens(prompt),
            0,
        )
    # Unknown endpoint (only reachable through the lenient Azure path forms): echo the body.
    return LineResult(200, {"object": "emulator.echo", "model": model_s, "echo": body}, 1, 0)
