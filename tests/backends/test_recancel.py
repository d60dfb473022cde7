"""The ray backend sends a cancel again when Ray lost it (``ember/core/ray_backend/_recancel``).

A fake Ray stands in: a real lost cancel is a race (seen about once in 200 cancels sent right
after the submission); ``test_contract.py`` runs real cancels on Ray."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ember.core.ray_backend import _recancel
from ember.core.ray_backend._recancel import Recanceller
from ember.testing import eventually


class FakeRay:
    """Tasks that finish when told; records every cancel sent."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.cancels: list[tuple[str, bool, bool]] = []
        self.lock = threading.Lock()

    def wait(self, refs: list[str], timeout: float, fetch_local: bool) -> tuple[list[str],
                                                                               list[str]]:
        assert timeout == 0 and fetch_local is False  # never blocks, never pulls the value
        with self.lock:
            return [r for r in refs if r in self.done], [r for r in refs if r not in self.done]

    def cancel(self, ref: str, *, force: bool, recursive: bool) -> None:
        with self.lock:
            self.cancels.append((ref, force, recursive))


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recancel, "FIRST_RESEND_S", 0.05)


def test_a_task_still_running_gets_the_cancel_again_with_growing_waits_then_no_more(quick):
    ray = FakeRay()
    recancel = Recanceller(ray)
    start = time.monotonic()
    recancel.watch("lost", True, False)
    eventually(lambda: len(ray.cancels) == _recancel.RESENDS, timeout=10, what="the resends")
    assert ray.cancels == [("lost", True, False)] * _recancel.RESENDS
    assert time.monotonic() - start >= 0.05 + 0.1 + 0.2  # 2x the wait before each
    time.sleep(0.5)
    assert len(ray.cancels) == _recancel.RESENDS  # then it gives up
    eventually(lambda: recancel._thread is None, timeout=10, what="the thread to end")


def test_a_task_that_ended_gets_no_second_cancel(quick):
    ray = FakeRay()
    recancel = Recanceller(ray)
    ray.done.add("cancelled")
    recancel.watch("cancelled", False, True)
    recancel.watch("lost", False, True)
    eventually(lambda: ray.cancels, timeout=10, what="a resend")
    ray.done.add("lost")  # the resend took
    time.sleep(0.5)
    assert ray.cancels == [("lost", False, True)]
    eventually(lambda: recancel._thread is None, timeout=10, what="the thread to end")


def test_closing_stops_the_resends(quick):
    ray = FakeRay()
    recancel = Recanceller(ray)
    recancel.watch("lost", False, True)
    recancel.close()
    time.sleep(0.3)
    assert ray.cancels == []
    recancel.watch("later", False, True)  # after shutdown: ignored
    time.sleep(0.3)
    assert ray.cancels == [] and recancel._thread is None


def test_a_ray_that_fails_on_wait_is_left_alone(quick):
    class Gone(FakeRay):
        def wait(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("Ray shut down")

    ray = Gone()
    recancel = Recanceller(ray)
    recancel.watch("x", False, True)
    eventually(lambda: recancel._thread is None, timeout=10, what="the thread to end")
    assert ray.cancels == []


def test_the_resends_fall_2_6_and_14_s_after_the_cancel() -> None:
    assert [_recancel._resend_at(100.0, sent) for sent in range(_recancel.RESENDS)] == [
        102.0, 106.0, 114.0]
