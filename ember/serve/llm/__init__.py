"""ember.serve.llm: serve Hugging Face causal LMs behind an OpenAI-compatible HTTP API.

    from ember import serve
    from ember.serve.llm import build_openai_app

    serve.run(build_openai_app({"base": "ckpt/base", "tuned": "ckpt/tuned"}), port=8000)

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="tuned", messages=[...], stream=True)

- ``LLMEngine``: continuous batching for one model (requests join and leave between decode
  steps), usable on its own or inside any deployment;
- ``build_openai_app``: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (with
  ``stream: true`` as server-sent events), the ``model`` field routed by model multiplexing.

torch and transformers load only when an engine is built.
"""

from __future__ import annotations

from ember.serve.llm._app import LLMServer, OpenAIIngress, OpenAIServer, build_openai_app
from ember.serve.llm._engine import (
    EngineClosedError,
    EngineOverloadedError,
    EngineStats,
    LLMEngine,
)
from ember.serve.llm._openai import DEFAULT_CHAT_TEMPLATE_DOC, OpenAIError, default_chat_prompt
from ember.serve.llm._params import Delta, SamplingParams
from ember.serve.llm._tokenizer import byte_tokenizer

__all__ = [
    "DEFAULT_CHAT_TEMPLATE_DOC",
    "Delta",
    "EngineClosedError",
    "EngineOverloadedError",
    "EngineStats",
    "LLMEngine",
    "LLMServer",
    "OpenAIError",
    "OpenAIIngress",
    "OpenAIServer",
    "SamplingParams",
    "build_openai_app",
    "byte_tokenizer",
    "default_chat_prompt",
]
