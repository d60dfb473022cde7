"""Which waiting requests join the running batch at the next step boundary (pure).

Continuous batching: the engine runs one decode step for every running sequence at once; between
steps, finished and abandoned sequences leave and waiting ones join. The rule:

- at most ``max_num_seqs`` sequences run at once;
- waiting requests join in arrival order (first come, first served: none is overtaken);
- one step admits prompts of at most ``max_prefill_tokens`` tokens in total (at least one
  prompt, however long), so that a burst of long prompts does not stall the running sequences
  for one long prefill;
- at most ``max_waiting`` requests wait beyond the free places of the batch; past that a new
  one is refused (the caller answers "overloaded" at once rather than queueing without bound).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class Scheduler:
    max_num_seqs: int = 16
    max_waiting: int = 256
    max_prefill_tokens: int = 4096
    _waiting: OrderedDict[Hashable, int] = field(default_factory=OrderedDict, repr=False)
    _running: set[Hashable] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_prefill_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not isinstance(self.max_waiting, int) or self.max_waiting < 0:
            raise ValueError(f"max_waiting={self.max_waiting!r} must be an integer >= 0")

    def add(self, key: Hashable, prompt_tokens: int) -> bool:
        """Queue a request; False when ``max_waiting`` requests already wait for a place
        (refused)."""
        if key in self._waiting or key in self._running:
            raise ValueError(f"request {key!r} is already queued or running")
        free = max(0, self.max_num_seqs - len(self._running))
        if len(self._waiting) - free >= self.max_waiting:
            return False
        self._waiting[key] = prompt_tokens
        return True

    def admit(self) -> list[Hashable]:
        """The requests that join the batch now, oldest first; they count as running."""
        joined: list[Hashable] = []
        budget = self.max_prefill_tokens
        for key, tokens in self._waiting.items():
            if len(self._running) + len(joined) >= self.max_num_seqs:
                break
            if joined and tokens > budget:
                break  # the next one waits for the next step (never overtaken)
            joined.append(key)
            budget -= tokens
        for key in joined:
            del self._waiting[key]
            self._running.add(key)
        return joined

    def remove(self, key: Hashable) -> str | None:
        """A request finished or was abandoned: ``"waiting"`` or ``"running"`` (where it was),
        or None when it is not here."""
        if self._waiting.pop(key, None) is not None:
            return "waiting"
        if key in self._running:
            self._running.discard(key)
            return "running"
        return None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)
