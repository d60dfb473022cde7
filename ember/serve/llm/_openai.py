"""OpenAI's HTTP API, the parts that do not touch a model (pure): reading requests, checking
them, the chat template for models without one, and the shapes of responses, stream chunks and
errors.

Requests are checked field by field; a bad one is an ``OpenAIError`` (HTTP 400) that names the
field, as OpenAI's own errors do. Fields that ask for something this server does not do (``n``
above 1, ``logprobs``, ``tools``...) are refused rather than silently ignored.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ember.errors import EmberError
from ember.serve.llm._params import SamplingParams

# The chat template used when the tokenizer has none: one line per message, role first, then
# the turn for the model to complete.
DEFAULT_CHAT_TEMPLATE_DOC = """\
{role}: {content}      one line per message, in order (system, user, assistant...)
assistant:             then this, for the model to go on from"""

ROLES = ("system", "developer", "user", "assistant")
SSE_DONE = b"data: [DONE]\n\n"


class OpenAIError(EmberError):
    """An error as OpenAI's API reports it: an HTTP status and ``{"error": {...}}``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (OpenAIError, (self.status, self.message, self.type, self.param, self.code))

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI's API sends for this error: ``{"error": {"message", "type", ...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param)


def unknown_model(model: str, known: Sequence[str]) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist; this server has: "
                            f"{', '.join(sorted(known))}", "invalid_request_error", "model",
                       "model_not_found")


def overloaded(message: str) -> OpenAIError:
    return OpenAIError(503, message, "server_error", None, "overloaded")


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request: what to generate and how to answer."""

    kind: str  # "completion" | "chat"
    model: str
    params: SamplingParams
    prompt: str | tuple[int, ...] = ""
    messages: tuple[tuple[str, str], ...] = ()  # (role, content), for chat
    stream: bool = False
    include_usage: bool = False


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object, like "
                          '{"model": "...", "prompt": "..."}')
    return body


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float,
            low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) \
            or not (low < value if low_open else low <= value) or not value <= high:
        span = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise bad_request(f"{name}={value!r} must be a number in {span}", name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise bad_request(f"{name}={value!r} must be an integer >= {low}", name)
    return value


def _refuse_unsupported(body: Mapping[str, Any], kind: str) -> None:
    """Fields this server does not implement: accepted only at their no-op values."""
    noop: dict[str, tuple[Any, ...]] = {
        "n": (None, 1), "best_of": (None, 1), "logprobs": (None, False), "echo": (None, False),
        "top_logprobs": (None, 0), "suffix": (None, ""), "logit_bias": (None, {}),
        "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
        "tools": (None, []), "functions": (None, []), "tool_choice": (None, "none"),
        "response_format": (None, {"type": "text"}),
    }
    for name, allowed in noop.items():
        if name in body and body[name] not in allowed:
            raise bad_request(f"{name}={body[name]!r} is not supported by this server "
                              f"({kind}); leave it out", name)


def _sampling(body: Mapping[str, Any], default_max_tokens: int | None) -> SamplingParams:
    max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_completion_tokens", 1)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) \
            and len(stop) <= 16:
        stops = tuple(stop)
    else:
        raise bad_request(f"stop={stop!r} must be a string or a list of up to 16 non-empty "
                          "strings", "stop")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad_request(f"seed={seed!r} must be an integer", "seed")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise bad_request(f"ignore_eos={ignore_eos!r} must be true or false", "ignore_eos")
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in stop_ids):
        raise bad_request(f"stop_token_ids={stop_ids!r} must be a list of token ids",
                          "stop_token_ids")
    return SamplingParams(
        max_tokens=default_max_tokens if max_tokens is None else max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        stop=stops, seed=seed, ignore_eos=ignore_eos, stop_token_ids=tuple(stop_ids))


def _stream_options(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request(f"stream={stream!r} must be true or false", "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise bad_request("stream_options is only allowed with stream: true", "stream_options")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False),
                                                       bool):
        raise bad_request(f"stream_options={options!r} must be like {{\"include_usage\": "
                          "true}", "stream_options")
    return stream, bool(options.get("include_usage", False))


def _model(body: Mapping[str, Any], known: Sequence[str]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(f"model={model!r}: name one of this server's models "
                          f"({', '.join(sorted(known))})", "model")
    if model not in known:
        raise unknown_model(model, known)
    return model


def parse_completion(body: Mapping[str, Any], known: Sequence[str]) -> GenerationRequest:
    """A ``POST /v1/completions`` body, checked."""
    model = _model(body, known)
    _refuse_unsupported(body, "completions")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
        text: str | tuple[int, ...] = tuple(prompt)
    elif isinstance(prompt, str) and prompt:
        text = prompt
    else:
        raise bad_request(f"prompt={prompt!r} must be a non-empty string or list of token ids "
                          "(one prompt per request)", "prompt")
    stream, usage = _stream_options(body)
    return GenerationRequest("completion", model, _sampling(body, 16), prompt=text,
                             stream=stream, include_usage=usage)


def parse_chat(body: Mapping[str, Any], known: Sequence[str]) -> GenerationRequest:
    """A ``POST /v1/chat/completions`` body, checked."""
    model = _model(body, known)
    _refuse_unsupported(body, "chat completions")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list of {\"role\": ..., \"content\": "
                          "...}", "messages")
    messages = []
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise bad_request(f"messages[{i}].role={role!r} must be one of {', '.join(ROLES)}",
                              f"messages[{i}].role")
        messages.append((str(role), _content(message.get("content"), i)))
    stream, usage = _stream_options(body)
    return GenerationRequest("chat", model, _sampling(body, None), messages=tuple(messages),
                             stream=stream, include_usage=usage)


def _content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise bad_request(f"messages[{i}].content must be a string or a list of "
                      "{\"type\": \"text\", \"text\": ...} parts", f"messages[{i}].content")


def default_chat_prompt(messages: Sequence[tuple[str, str]]) -> str:
    """The prompt for a chat, for models whose tokenizer has no chat template (see
    ``DEFAULT_CHAT_TEMPLATE_DOC``)."""
    return "".join(f"{role}: {content}\n" for role, content in messages) + "assistant:"


# -- responses --------------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(12).hex()


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(kind: str, rid: str, created: int, model: str, text: str,
             finish_reason: str | None, counts: dict[str, int]) -> dict[str, Any]:
    """The whole answer of a request without ``stream``."""
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": counts}


def chunk(kind: str, rid: str, created: int, model: str, text: str | None,
          finish_reason: str | None = None, *, role: bool = False) -> dict[str, Any]:
    """One streamed piece: new text, or (with ``finish_reason``) the end of the choice."""
    if kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None,
                  "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}


def usage_chunk(kind: str, rid: str, created: int, model: str,
                counts: dict[str, int]) -> dict[str, Any]:
    """The last chunk of a stream with ``stream_options: {"include_usage": true}``."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
            "usage": counts}


def sse(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def models_list(names: Sequence[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                        "owned_by": "ember"} for name in names]}


def now() -> int:
    return int(time.time())
