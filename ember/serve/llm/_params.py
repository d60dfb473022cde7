"""What one generation request asks for (``SamplingParams``) and what it gets back (``Delta``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How to generate one completion.

    ``max_tokens``: at most this many new tokens (``None``: up to the model's context length).
    ``temperature`` 0 is greedy decoding (the same tokens as ``model.generate(do_sample=False)``);
    above 0 it samples, from the smallest set of tokens whose probabilities add up to ``top_p``.
    ``stop``: strings that end the completion (not included in it). ``seed``: the sampling is
    reproducible for a given seed. ``ignore_eos``: go on past the end-of-sequence token.
    """

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.stop_token_ids, tuple):
            object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        check_params(self)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_params(p: SamplingParams) -> None:
    """Raise ``ValueError`` naming the first bad field, the rule and the fix."""
    if p.max_tokens is not None and (not isinstance(p.max_tokens, int)
                                     or isinstance(p.max_tokens, bool) or p.max_tokens < 1):
        raise ValueError(f"max_tokens={p.max_tokens!r} must be an integer >= 1 (or None for "
                         "as many as the context holds)")
    if not _is_number(p.temperature) or not 0 <= p.temperature <= 100 \
            or math.isnan(p.temperature):
        raise ValueError(f"temperature={p.temperature!r} must be a number in [0, 100] "
                         "(0: greedy)")
    if not _is_number(p.top_p) or not 0 < p.top_p <= 1:
        raise ValueError(f"top_p={p.top_p!r} must be a number in (0, 1]")
    if len(p.stop) > 16 or not all(isinstance(s, str) and s for s in p.stop):
        raise ValueError(f"stop={list(p.stop)!r} must be up to 16 non-empty strings")
    if p.seed is not None and (not isinstance(p.seed, int) or isinstance(p.seed, bool)):
        raise ValueError(f"seed={p.seed!r} must be an integer (or None)")
    if not isinstance(p.ignore_eos, bool):
        raise ValueError(f"ignore_eos={p.ignore_eos!r} must be true or false")
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
               for t in p.stop_token_ids):
        raise ValueError(f"stop_token_ids={list(p.stop_token_ids)!r} must be token ids "
                         "(integers >= 0)")


@dataclass
class Delta:
    """What a completion gained since the last one the caller saw.

    ``text`` and ``token_ids`` are new; ``finish_reason`` is ``None`` until the last delta, then
    ``"stop"`` (end-of-sequence token or a stop string) or ``"length"`` (``max_tokens`` or the
    context length). ``prompt_tokens`` and ``completion_tokens`` count the whole request so far.
    """

    text: str
    token_ids: list[int]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int

    def merge(self, later: Delta) -> Delta:
        """This delta followed by ``later``: their text and tokens joined, the later counts kept."""
        return Delta(self.text + later.text, self.token_ids + later.token_ids,
                     later.finish_reason or self.finish_reason, later.prompt_tokens,
                     later.completion_tokens)


def merged(deltas: Sequence[Delta]) -> Delta:
    first = deltas[0]
    out = Delta(first.text, list(first.token_ids), first.finish_reason, first.prompt_tokens,
                first.completion_tokens)
    for delta in deltas[1:]:
        out = out.merge(delta)
    return out
