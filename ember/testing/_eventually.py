"""``eventually``: poll a condition until it holds, for state that settles asynchronously."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.02,
               what: str | None = None) -> T:
    """Call ``condition`` until it returns something truthy, and return that value.

    A call that raises ``AssertionError`` counts as "not yet", so ``condition`` may be a
    function full of ``assert`` statements. After ``timeout`` seconds the test fails with an
    ``AssertionError`` that says what was awaited (``what``, else the condition's name) and,
    if the last try raised, why. Other exceptions propagate at once: they are bugs, not
    "not yet".

    For state that settles in the background (a freed segment, a restarted actor, a replica
    count, a process that exits); it never asserts how long the wait took, so a slow machine
    makes it slower, not flaky. Pure code with a clock argument needs no waiting: use
    ``FakeClock`` there.

    >>> import itertools
    >>> ticks = itertools.count()
    >>> eventually(lambda: next(ticks) >= 3, interval=0)
    True
    >>> eventually(lambda: False, timeout=0.05, what="the moon to turn blue")
    Traceback (most recent call last):
    ...
    AssertionError: gave up after 0.05 s waiting for the moon to turn blue
    """
    if timeout < 0 or interval < 0:
        raise ValueError(f"timeout={timeout!r} and interval={interval!r} must be >= 0 seconds")
    label = what or getattr(condition, "__name__", None) or repr(condition)
    if label == "<lambda>":
        label = "a condition"
    deadline = time.monotonic() + timeout
    while True:
        last: AssertionError | None = None
        try:
            value = condition()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            reason = f" (last try: {last})" if last is not None and str(last) else ""
            raise AssertionError(f"gave up after {timeout:g} s waiting for {label}{reason}"
                                 ) from last
        time.sleep(interval)
