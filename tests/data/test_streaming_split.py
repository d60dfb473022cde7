"""``streaming_split``: n consumers in different processes share one streaming execution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import ember
import ember.data as ed
from ember.data._split import SplitState


@ember.remote
class Consumer:
    """A consumer in its own process, like a train worker holding its iterator."""

    def ids(self, it: Any, epochs: int = 1, stop_after_batches: int | None = None
            ) -> list[list[int]]:
        seen: list[list[int]] = []
        for _ in range(epochs):
            ids: list[int] = []
            for n, batch in enumerate(it.iter_batches(batch_size=5)):
                if stop_after_batches is not None and n == stop_after_batches:
                    break
                ids.extend(int(i) for i in batch["id"])
            seen.append(ids)
        return seen


def run_consumers(its: list[Any], **kwargs: Any) -> list[list[list[int]]]:
    consumers = [Consumer.remote() for _ in its]
    return ember.get([c.ids.remote(it, **kwargs) for c, it in zip(consumers, its, strict=True)])


def test_two_consumers_in_two_actors_see_every_row_once(ember_local: Any) -> None:
    its = ed.range(200, parallelism=10).map_batches(
        lambda b: {"id": b["id"]}).streaming_split(2)
    (a,), (b,) = run_consumers(its)
    assert sorted(a + b) == list(range(200))
    assert a and b


def test_equal_split_gives_each_consumer_the_same_number_of_rows(ember_local: Any) -> None:
    its = ed.range(101, parallelism=7).streaming_split(2, equal=True)
    (a,), (b,) = run_consumers(its)
    assert len(a) == len(b) == 50
    assert len(set(a) | set(b)) == 100  # disjoint; one row of the remainder dropped


def test_a_consumer_stopping_early_does_not_hang_the_other(ember_local: Any) -> None:
    its = ed.range(300, parallelism=30).streaming_split(2)
    consumers = [Consumer.remote() for _ in its]
    quitter = consumers[0].ids.remote(its[0], stop_after_batches=1)
    stayer = consumers[1].ids.remote(its[1])
    (quit_ids,), (stay_ids,) = ember.get([quitter, stayer])
    assert len(quit_ids) == 5
    assert not set(quit_ids) & set(stay_ids)
    assert len(stay_ids) >= 300 - 30 - len(quit_ids)  # all but what the quitter held


def test_every_iter_call_on_all_consumers_is_one_epoch(ember_local: Any) -> None:
    its = ed.range(60, parallelism=6).streaming_split(2, equal=True)
    a, b = run_consumers(its, epochs=2)
    for epoch in range(2):
        assert sorted(a[epoch] + b[epoch]) == list(range(60))
        assert len(a[epoch]) == len(b[epoch]) == 30


def test_a_udf_error_reaches_the_consumers(ember_local: Any) -> None:
    def boom(batch: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("no such thing")

    its = ed.range(20, parallelism=2).map_batches(boom).streaming_split(2)
    with pytest.raises(KeyError, match="no such thing"):
        run_consumers(its)


def test_iterators_work_in_the_driver_too(ember_local: Any) -> None:
    (it,) = ed.range(10).streaming_split(1)
    assert sorted(r["id"] for r in it.iter_rows()) == list(range(10))


def test_a_split_iterator_gives_torch_batches_in_the_driver(ember_local: Any) -> None:
    pytest.importorskip("torch")
    (it,) = ed.range(10).streaming_split(1)
    batches = list(it.iter_torch_batches(batch_size=4))
    assert sum(len(b["id"]) for b in batches) == 10


def test_bad_arguments_say_what_to_pass(ember_local: Any) -> None:
    with pytest.raises(ValueError, match="int >= 1"):
        ed.range(10).streaming_split(0)
    with pytest.raises(ValueError, match="one per split"):
        ed.range(10).streaming_split(2, locality_hints=["node"])


# -- the policy, directly -----------------------------------------------------------------------
def drain(state: SplitState, consumer: int) -> int:
    rows = 0
    while (piece := state.take(consumer)) is not None:
        rows += piece[2]
    return rows


def test_equal_policy_hands_out_only_rows_that_stay_balanced() -> None:
    state = SplitState(3, equal=True)
    for i, rows in enumerate([7, 1, 9, 4, 4, 2]):
        state.add(f"block{i}", rows, requester=0)
    got = [drain(state, c) for c in range(3)]
    assert max(got) <= min(state.assigned)  # nothing given that a later rebalance would need
    state.finish()
    got = [g + drain(state, c) for c, g in enumerate(got)]
    assert got == [9, 9, 9]  # 27 rows // 3


def test_unequal_policy_gives_each_block_to_whoever_asked() -> None:
    state = SplitState(2, equal=False)
    state.add("x", 5, requester=1)
    assert state.take(0) is None and state.take(1) == ("x", 0, 5)


# -- with ember.train ---------------------------------------------------------------------------
def shard_loop(config: dict[str, Any]) -> None:
    from ember import train

    shard = train.get_dataset_shard("train")
    ids = [int(i) for b in shard.iter_batches(batch_size=8) for i in b["id"]]
    rank = train.get_context().get_world_rank()
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(ids))
    train.report({"rows": len(ids)})


@pytest.mark.parametrize("ember_local", [{"num_cpus": 4}], indirect=True)
def test_torch_trainer_workers_see_disjoint_parts(ember_local: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from ember.train import RunConfig, ScalingConfig
    from ember.train.torch import TorchTrainer

    result = TorchTrainer(
        shard_loop, train_loop_config={"out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2), datasets={"train": ed.range(100)},
        run_config=RunConfig(name="run", storage_path=str(tmp_path / "runs"))).fit()
    assert result.error is None
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 50
    assert sorted(r0 + r1) == list(range(100))
