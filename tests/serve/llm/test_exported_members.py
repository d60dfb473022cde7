"""Pin ``ember.serve.llm.__all__``, and check that importing it loads no heavy library."""

from __future__ import annotations

import subprocess
import sys

from ember.serve import llm

LLM_ALL = [
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


def test_llm_all_is_pinned() -> None:
    assert llm.__all__ == LLM_ALL
    for name in LLM_ALL:
        assert getattr(llm, name).__doc__ or isinstance(getattr(llm, name), str), name


def test_importing_serve_llm_loads_no_model_library_nor_web_stack() -> None:
    code = ("import sys, ember.serve.llm; print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'torch', 'transformers', 'tokenizers', 'starlette', 'uvicorn', 'openai'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
