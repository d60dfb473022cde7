"""A byte-level tokenizer: token id = byte value (256 tokens), as a ``transformers`` tokenizer.

For small models trained on raw bytes (the demo's tiny GPT-2): ``save_pretrained`` it beside the
model and ``AutoTokenizer.from_pretrained`` loads it back, offline.
"""

from __future__ import annotations

from typing import Any


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: a printable character for every byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def byte_tokenizer(eos_token_id: int | None = 0, chat_template: str | None = None) -> Any:
    """A ``PreTrainedTokenizerFast`` whose token ids are the bytes of the UTF-8 text.

    ``eos_token_id``: which byte ends a sequence (default 0, NUL; ``None``: none).
    ``chat_template``: a Jinja chat template to save with it (default: none, so the OpenAI
    app uses its plain role-prefixed template).

    ::

        model.save_pretrained(path)
        byte_tokenizer().save_pretrained(path)   # then LLMEngine.from_pretrained(path)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = _bytes_to_unicode()
    core = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    special = {} if eos_token_id is None else {"eos_token": alphabet[eos_token_id]}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, split_special_tokens=True,
                                        **special)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
