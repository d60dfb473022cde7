"""ember.testing: helpers for testing programs that use ember (like ``starlette.testclient``).

- ``eventually(condition, timeout=...)``: poll until something that settles in the background
  (a freed object, an actor restarted, a replica scaled up) holds; fail the test if it never does.
- ``FakeClock``: a clock a test moves by hand, for policies that take the time as an argument
  (``now=``) or a clock callable, so tests need no sleeps.
- ``LeakCheck``: fails a test that leaves an ember process or a ``/dev/shm`` segment behind
  (and an ``ember-*`` temp folder, in a temp folder of the test's own that you give it).
- ``ServeTestClient``: deploys an ember.serve application and talks to it over HTTP with
  httpx (and through its Python handle); everything it started stops when it closes.

Nothing here is imported by ``import ember``; ``ServeTestClient`` loads httpx only when used::

    import ember
    from ember.testing import LeakCheck, eventually

    def test_counter_actor():
        with LeakCheck():            # on exit: shuts the runtime down, checks nothing is left
            ember.init(num_cpus=2)
            counter = ember.remote(Counter).remote()
            counter.add.remote(5)
            eventually(lambda: ember.get(counter.total.remote()) == 5)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ember.testing._clock import FakeClock
from ember.testing._eventually import eventually
from ember.testing._leaks import LeakCheck

if TYPE_CHECKING:
    from ember.testing._serve import ServeTestClient

__all__ = ["FakeClock", "LeakCheck", "ServeTestClient", "eventually"]


def __getattr__(name: str) -> Any:
    if name == "ServeTestClient":  # loads httpx: only when asked for
        value = importlib.import_module("ember.testing._serve").ServeTestClient
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.testing' has no attribute {name!r}")
