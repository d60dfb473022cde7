"""Generated token ids to text, a piece at a time, with stop strings (pure: no model here).

Decoding each new token alone breaks on tokens that are only part of a character (byte-level
vocabularies split UTF-8) and on tokenizers whose tokens decode differently after a neighbour
(SentencePiece's leading spaces). So each step decodes a short window of recent ids and emits
what the window's text gained, and nothing while that text ends in an incomplete character.

Text that could be the start of a stop string is held back until it is known not to be, so a
stop string never reaches the caller, not even in part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PROMPT_CONTEXT = 6  # prompt tokens decoded before the first new one, for its spacing


class IncrementalText:
    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: Sequence[int] = (),
                 stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._ids = list(prompt_ids[-PROMPT_CONTEXT:])
        self._prefix = 0  # the window: ids[prefix:read] are decoded text already counted
        self._read = len(self._ids)
        self._stop = tuple(stop)
        self.text = ""  # decoded so far, past any stop string: the completion
        self._emitted = 0
        self.stopped = False  # a stop string was found; the text ends before it

    def add(self, token_id: int) -> str:
        """Take one generated token; returns the text that may be shown now."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        self._advance(final=False)
        return self._release(final=False)

    def finish(self) -> str:
        """The generation ended: whatever is left (an incomplete character too)."""
        if self.stopped:
            return ""
        self._advance(final=True)
        return self._release(final=True)

    def _advance(self, final: bool) -> None:
        if self._read == len(self._ids):
            return
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self._ids)

    def _release(self, final: bool) -> str:
        if self._stop:
            hits = [i for i in (self.text.find(s, self._emitted) for s in self._stop) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.stopped = True
                final = True
        end = len(self.text) if final else len(self.text) - self._maybe_stop_suffix()
        out = self.text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return out

    def _maybe_stop_suffix(self) -> int:
        """Length of the longest unreleased tail of the text that a stop string starts with."""
        tail = len(self.text) - self._emitted
        longest = max((len(s) - 1 for s in self._stop), default=0)
        for k in range(min(tail, longest), 0, -1):
            piece = self.text[-k:]
            if any(s.startswith(piece) for s in self._stop):
                return k
        return 0
