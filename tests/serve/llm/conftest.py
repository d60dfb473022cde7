"""A tiny GPT-2 with a byte-level tokenizer, saved as a checkpoint folder (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONTEXT = 512


def save_tiny_gpt2(folder: Path, seed: int = 0) -> str:
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    from ember.serve.llm import byte_tokenizer

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    # wide initial weights: an untrained model whose greedy text varies (the default ones
    # mostly repeat the prompt's last byte)
    config = GPT2Config(vocab_size=256, n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, initializer_range=0.3)
    GPT2LMHeadModel(config).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tuned_gpt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second variant: other weights, so its answers differ from ``tiny_gpt2``'s."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("tuned-gpt2"), seed=1)
