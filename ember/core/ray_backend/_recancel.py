"""Cancels that Ray lost, sent again.

A ``ray.cancel`` that reaches a worker while the task is being handed to it (a warm worker, the
cancel right after the submission) can be lost: the task then runs to its end. It happened here
about once in 200 such cancels, with ``force`` too. So a cancelled task that is still not done a
while later gets the cancel again: at 2, 6 and 14 s after the first, then never.

The price: a task that catches the ``KeyboardInterrupt`` of a cancel and cleans up for longer
than 2 s gets a second one (as a second ``ray.cancel`` by hand would give it).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any

logger = logging.getLogger("ember")

FIRST_RESEND_S = 2.0
RESENDS = 3  # each after twice the wait before it: 2, 6 and 14 s after the cancel


def _resend_at(cancelled_at: float, sent: int) -> float:
    """When the resend after ``sent`` earlier ones is due."""
    return cancelled_at + FIRST_RESEND_S * float(2 ** (sent + 1) - 1)


class Recanceller:
    """One daemon thread, started at the first cancel and gone when nothing is left to watch."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self._cond = threading.Condition()
        # (when due, tie-breaker, when cancelled, resends so far, ray ref, force, recursive)
        self._due: list[tuple[float, int, float, int, Any, bool, bool]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, ray_ref: Any, force: bool, recursive: bool) -> None:
        """Send the cancel of ``ray_ref`` again if it is still not done in a while."""
        now = time.monotonic()
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._due, (_resend_at(now, 0), next(self._order), now, 0, ray_ref,
                                       force, recursive))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ember-recancel",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed or not self._due:
                        self._thread = None
                        return
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                _, _, cancelled_at, sent, ref, force, recursive = heapq.heappop(self._due)
            try:
                ready, _ = self._ray.wait([ref], timeout=0, fetch_local=False)
                if ready:
                    continue
                logger.debug("ember: a cancelled Ray task still runs %.0f s after its cancel; "
                             "cancelling it again", time.monotonic() - cancelled_at)
                self._ray.cancel(ref, force=force, recursive=recursive)
            except Exception:  # Ray shut down, or the task went meanwhile: nothing to do
                continue
            if sent + 1 < RESENDS:
                with self._cond:
                    heapq.heappush(self._due, (_resend_at(cancelled_at, sent + 1),
                                               next(self._order), cancelled_at, sent + 1, ref,
                                               force, recursive))
