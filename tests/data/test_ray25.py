"""Programs written for Ray 2.5's Data API (the project's reference) run on ember.data with
only the imports changed: the spellings 2.5 had and later releases dropped or renamed."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

import ember
import ember.data as ed


def ids(ds: Any) -> list[int]:
    return sorted(r["id"] for r in ds.take_all())


class Plus:
    def __init__(self, k: int = 1) -> None:
        self.k = k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"] + self.k}


def with_pid(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"id": batch["id"], "pid": np.full(len(batch["id"]), os.getpid())}


# -- 1. compute strategies, prefetch_blocks, batch formats --------------------------------------
def test_compute_strings_and_a_function_on_an_actor_pool(ember_local: Any) -> None:
    for compute in ("actors", ed.ActorPoolStrategy(size=1)):
        ds = ed.range(40, parallelism=4).map_batches(with_pid, compute=compute, batch_size=5)
        rows = ds.take_all()
        assert sorted(r["id"] for r in rows) == list(range(40))
        # One actor of the pool ran every batch (a pool of one; "actors" starts with one and
        # may grow, but never runs in the driver).
        assert os.getpid() not in {r["pid"] for r in rows}
    assert len({r["pid"] for r in ed.range(40, parallelism=4).map_batches(
        with_pid, compute=ed.ActorPoolStrategy(size=1)).take_all()}) == 1
    assert ids(ed.range(5).map_batches(Plus, compute="actors")) == [1, 2, 3, 4, 5]
    assert ids(ed.range(5).map_batches(lambda b: b, compute="tasks")) == [0, 1, 2, 3, 4]
    assert ids(ed.range(6).filter(lambda r: r["id"] < 2, compute="actors")) == [0, 1]
    with pytest.raises(ValueError, match="class Plus: classes run on an actor pool"):
        ed.range(3).map_batches(Plus, compute="tasks")
    with pytest.raises(ValueError, match="'actor'.*\"actors\""):
        ed.range(3).map_batches(lambda b: b, compute="actor")


def test_prefetch_blocks_and_native_batch_format(ember_local: Any) -> None:
    ds = ed.range(10, parallelism=2)
    batches = list(ds.iter_batches(batch_size=4, prefetch_blocks=2, batch_format="native"))
    assert [len(b["id"]) for b in batches] == [4, 4, 2] and isinstance(batches[0], dict)
    torch_batches = list(ds.iter_torch_batches(batch_size=5, prefetch_blocks=0))
    assert sorted(int(v) for b in torch_batches for v in b["id"]) == list(range(10))
    assert ids(ds.map_batches(lambda b: {"id": b["id"] * 2}, batch_format="native")) == [
        2 * i for i in range(10)]
    with pytest.raises(ValueError, match="disagree"):
        list(ds.iter_batches(prefetch_batches=3, prefetch_blocks=2))
    with pytest.raises(ValueError, match="prefetch_blocks=-1"):
        list(ds.iter_batches(prefetch_blocks=-1))
