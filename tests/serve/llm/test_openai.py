"""The OpenAI protocol without a model: request checks, the chat template, response shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ember.serve.llm import SamplingParams, default_chat_prompt
from ember.serve.llm._openai import (
    OpenAIError,
    chunk,
    parse_chat,
    parse_completion,
    parse_json,
    response,
    sse,
    usage_chunk,
)

MODELS = ["base", "tuned"]


def test_a_completion_request_becomes_sampling_params() -> None:
    request = parse_completion({"model": "tuned", "prompt": "Hi", "max_tokens": 5,
                                "temperature": 0, "top_p": 0.5, "stop": "\n", "seed": 3,
                                "stream": True, "stream_options": {"include_usage": True}},
                               MODELS)
    assert request.model == "tuned" and request.prompt == "Hi" and request.kind == "completion"
    assert request.params == SamplingParams(max_tokens=5, temperature=0.0, top_p=0.5,
                                            stop=("\n",), seed=3)
    assert request.stream and request.include_usage


def test_defaults_follow_openai() -> None:
    completion = parse_completion({"model": "base", "prompt": ["x"]}, MODELS)
    assert completion.params.max_tokens == 16 and completion.params.temperature == 1.0
    assert not completion.stream
    chat = parse_chat({"model": "base", "messages": [{"role": "user", "content": "x"}]}, MODELS)
    assert chat.params.max_tokens is None  # as much as the context holds


def test_token_id_prompts_and_text_parts_are_accepted() -> None:
    assert parse_completion({"model": "base", "prompt": [1, 2, 3]}, MODELS).prompt == (1, 2, 3)
    chat = parse_chat({"model": "base", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"},
                                     {"type": "text", "text": "b"}]}]}, MODELS)
    assert chat.messages == (("user", "ab"),)


def error_of(call: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"prompt": "x"}, "model", "model=None"),
    ({"model": "base"}, "prompt", "prompt=None"),
    ({"model": "base", "prompt": ""}, "prompt", "non-empty"),
    ({"model": "base", "prompt": ["a", "b"]}, "prompt", "one prompt per request"),
    ({"model": "base", "prompt": "x", "max_tokens": 0}, "max_tokens", "max_tokens=0"),
    ({"model": "base", "prompt": "x", "temperature": 3}, "temperature", "[0.0, 2.0]"),
    ({"model": "base", "prompt": "x", "top_p": 0}, "top_p", "top_p=0"),
    ({"model": "base", "prompt": "x", "stop": 5}, "stop", "stop=5"),
    ({"model": "base", "prompt": "x", "seed": "a"}, "seed", "seed='a'"),
    ({"model": "base", "prompt": "x", "n": 2}, "n", "not supported"),
    ({"model": "base", "prompt": "x", "logprobs": 3}, "logprobs", "not supported"),
    ({"model": "base", "prompt": "x", "stream": "yes"}, "stream", "stream='yes'"),
    ({"model": "base", "prompt": "x", "stream_options": {"include_usage": True}},
     "stream_options", "only allowed with stream"),
])
def test_a_bad_completion_request_is_a_400_naming_the_field(
        body: dict[str, Any], param: str, says: str) -> None:
    error = error_of(lambda: parse_completion(body, MODELS))
    assert error.status == 400 and error.param == param
    assert says in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("messages", "param"), [
    (None, "messages"), ([], "messages"), ([{"role": "robot", "content": "x"}],
                                           "messages[0].role"),
    ([{"role": "user", "content": 5}], "messages[0].content")])
def test_a_bad_chat_request_is_a_400_naming_the_field(messages: Any, param: str) -> None:
    error = error_of(lambda: parse_chat({"model": "base", "messages": messages}, MODELS))
    assert error.status == 400 and error.param == param


def test_an_unknown_model_is_a_404_listing_the_models() -> None:
    error = error_of(lambda: parse_completion({"model": "gpt-9", "prompt": "x"}, MODELS))
    assert error.status == 404 and error.code == "model_not_found"
    assert "gpt-9" in error.message and "base, tuned" in error.message


def test_a_body_that_is_not_a_json_object_is_a_400() -> None:
    assert error_of(lambda: parse_json(b"{nope")).status == 400
    assert "JSON object" in error_of(lambda: parse_json(b"[1]")).message


def test_the_default_chat_template_is_one_line_per_message_then_the_assistant_turn() -> None:
    prompt = default_chat_prompt([("system", "Be brief."), ("user", "Hi")])
    assert prompt == "system: Be brief.\nuser: Hi\nassistant:"


def test_response_and_chunk_shapes_are_openais() -> None:
    counts = {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    chat = response("chat", "chatcmpl-1", 7, "base", "hey", "stop", counts)
    assert chat["object"] == "chat.completion" and chat["usage"] == counts
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "hey"}
    first = chunk("chat", "chatcmpl-1", 7, "base", "h", role=True)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "h"}
    last = chunk("chat", "chatcmpl-1", 7, "base", None, "length")
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": "length"}
    text = chunk("completion", "cmpl-1", 7, "base", "x")
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "x"
    assert usage_chunk("chat", "c", 7, "base", counts)["choices"] == []
    event = sse(text)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:]) == text


def test_errors_survive_pickling_with_their_status() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(OpenAIError(503, "busy", "server_error", None,
                                                  "overloaded")))
    assert (error.status, error.code, str(error)) == (503, "overloaded", "busy")
