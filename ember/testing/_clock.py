"""``FakeClock``: time that moves only when a test says so."""

from __future__ import annotations


class FakeClock:
    """A clock for tests of code that takes the time as an argument or a clock callable.

    Calling it returns the current fake time (a drop-in for ``time.monotonic``); ``advance``
    moves it forward, ``sleep`` is ``advance`` under the name code that waits expects. Policies
    in ember take ``now`` as an argument (the serve router and autoscaler, for example), so a
    test passes ``clock()`` and moves time on with ``advance`` instead of sleeping.

    >>> clock = FakeClock()
    >>> clock()
    0.0
    >>> clock.advance(1.5)
    1.5
    >>> clock.sleep(0.5); clock.monotonic()
    2.0

    A policy of your own that takes a clock, tested without sleeping:

    >>> class Debounce:
    ...     def __init__(self, delay, clock):
    ...         self.delay, self.clock, self.since = delay, clock, clock()
    ...     def quiet(self):
    ...         return self.clock() - self.since >= self.delay
    >>> debounce = Debounce(30.0, clock)
    >>> debounce.quiet()
    False
    >>> _ = clock.advance(30); debounce.quiet()
    True
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        """The current fake time, in seconds."""
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"

    @property
    def now(self) -> float:
        """The current fake time, in seconds."""
        return self._now

    def monotonic(self) -> float:
        """The current fake time (the name of ``time.monotonic``)."""
        return self._now

    def time(self) -> float:
        """The current fake time (the name of ``time.time``)."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never back); returns the new time.

        >>> FakeClock(10).advance(2)
        12.0
        """
        if seconds < 0:
            raise ValueError(f"advance({seconds!r}): a clock only moves forward; pass >= 0")
        self._now += seconds
        return self._now

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once (for code that is handed a ``sleep`` function)."""
        self.advance(seconds)
