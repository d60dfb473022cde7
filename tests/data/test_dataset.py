"""ember.data end to end on a 2-CPU local runtime: what a user sees."""

from __future__ import annotations

import collections
import itertools
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ember
import ember.data as ed
from ember.errors import ActorDiedError, ResourceError

DATA_ALL = [
    "ActorPoolStrategy", "BlockMetadata", "DataContext", "DataIterator", "Dataset",
    "DatasetContext", "DatasetIterator", "DatasetPipeline", "Datasink", "Datasource",
    "DatasetStats", "ExecutionOptions", "ExecutionResources",
    "GroupedData", "MaterializedDataset", "ReadTask", "StrictModeError",
    "TaskPoolStrategy", "from_arrow", "from_arrow_refs", "from_huggingface", "from_items",
    "from_numpy", "from_numpy_refs", "from_pandas", "from_pandas_refs", "from_torch", "range", "range_tensor", "read_binary_files", "read_csv",
    "read_datasource", "read_images", "read_json", "read_numpy", "read_parquet", "read_sql",
    "read_text",
]


def test_public_names_are_pinned() -> None:
    assert sorted(ed.__all__) == sorted(DATA_ALL)
    assert ember.data is ed
    # Ray's module names for custom sources.
    assert ed.block.__all__ == ["Block", "BlockMetadata"]
    assert ed.datasource.__all__ == ["Datasink", "Datasource", "Partitioning",
                                     "PathPartitionFilter", "ReadTask", "WriteResult"]
    assert ed.datasource.ReadTask is ed.ReadTask and ed.block.BlockMetadata is ed.BlockMetadata
    assert ed.context.__all__ == ["DataContext", "DatasetContext"]
    assert ed.context.DataContext is ed.DataContext is ed.DatasetContext


def ids(ds: ed.Dataset) -> list[int]:
    return sorted(r["id"] for r in ds.take_all())


def test_sources_have_named_columns(ember_local: Any, tmp_path: Path) -> None:
    assert ids(ed.range(3)) == [0, 1, 2] and ed.range(3).columns() == ["id"]
    assert ed.from_items([1, 2]).take_all() == [{"item": 1}, {"item": 2}]
    assert ed.from_items([{"a": 1}]).columns() == ["a"]
    assert ed.from_numpy(np.zeros((4, 2))).columns() == ["data"]
    assert ed.from_pandas(pd.DataFrame({"x": [1, 2]})).count() == 2
    assert ed.from_arrow(pa.table({"y": [1]})).take_all() == [{"y": 1}]
    tensor = ed.range_tensor(5, shape=(2, 3)).take_batch(5)
    assert tensor["data"].shape == (5, 2, 3) and sorted(tensor["data"].reshape(5, -1).max(axis=1)) == [0, 1, 2, 3, 4]
    (tmp_path / "a.txt").write_text("hello\nworld\n")
    assert ed.read_text(str(tmp_path / "a.txt")).take_all() == [{"text": "hello"},
                                                                {"text": "world"}]
    assert ed.read_binary_files(str(tmp_path / "a.txt")).take_all() == [
        {"bytes": b"hello\nworld\n"}]


def test_map_filter_map_batches_fuse_into_one_task_per_block(ember_local: Any) -> None:
    ds = (ed.range(1000, parallelism=4)
          .map(lambda r: {"id": r["id"] * 2})
          .filter(lambda r: r["id"] % 4 == 0)
          .map_batches(lambda b: {"id": b["id"] + 1}))
    assert ids(ds) == [i * 2 + 1 for i in range(0, 1000, 2)]
    stats = ds.stats()
    assert len(stats.operators) == 1 and stats.operators[0].tasks == 4
    assert "Range->Map" in str(stats)


@pytest.mark.parametrize("fmt,kind", [("numpy", dict), ("pandas", pd.DataFrame),
                                      ("pyarrow", pa.Table)])
def test_batch_formats(ember_local: Any, fmt: str, kind: type) -> None:
    seen: list[str] = []

    def fn(batch: Any) -> Any:
        assert isinstance(batch, kind)
        return batch

    out = ed.range(10).map_batches(fn, batch_format=fmt).take_all()
    assert sorted(r["id"] for r in out) == list(range(10))
    assert isinstance(ed.range(10).take_batch(3, batch_format=fmt), kind)
    del seen


def test_default_batch_sizes(ember_local: Any) -> None:
    sizes = ed.range(3000, parallelism=1).map_batches(
        lambda b: {"n": np.array([len(b["id"])])}).take_all()
    assert sorted(r["n"] for r in sizes) == [952, 1024, 1024]
    batches = list(ed.range(600).iter_batches())
    assert [len(b["id"]) for b in batches] == [256, 256, 88]


class _BatchLengths:
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"], "n": np.full(len(batch["id"]), len(batch["id"]))}


@pytest.mark.parametrize("compute", [None, ed.ActorPoolStrategy(size=1)], ids=["tasks", "pool"])
def test_small_blocks_are_joined_into_full_batches(ember_local: Any, compute: Any) -> None:
    # 20-row blocks from an upstream stage that cannot fuse (other num_cpus): map_batches still
    # sees batches of its batch_size, as a GPU model wants, apart from a few at the edges.
    upstream = ed.range(1000, parallelism=50).map(lambda r: r, num_cpus=0.5)
    fn = _BatchLengths if compute is not None else _BatchLengths()
    rows = upstream.map_batches(fn, batch_size=100, compute=compute).take_all()
    assert sorted(r["id"] for r in rows) == list(range(1000))
    lengths = [r["n"] for r in rows]
    assert max(lengths) == 100
    assert sum(n == 100 for n in lengths) >= 500, sorted(set(lengths))


def test_strict_mode_error_says_what_to_return(ember_local: Any) -> None:
    with pytest.raises(ed.StrictModeError, match="return a dict of column name"):
        ed.range(10).map_batches(lambda b: b["id"]).take_all()
    with pytest.raises(ValueError, match=r"\{'item': value\}"):
        ed.range(10).map(lambda r: r["id"]).take_all()


def test_udf_errors_reach_the_consumer(ember_local: Any) -> None:
    def boom(batch: Any) -> Any:
        raise KeyError("bad row")

    with pytest.raises(KeyError, match="bad row"):
        ed.range(10).map_batches(boom).count()


def test_unschedulable_request_raises_at_once(ember_local: Any) -> None:
    # A hang would show as the per-test timeout; the error must name the resource.
    with pytest.raises(ResourceError, match="GPU"):
        ed.range(10).map_batches(lambda b: b, num_gpus=1).take_all()

    class Model:
        def __call__(self, b: Any) -> Any:
            return b

    with pytest.raises(ResourceError, match="GPU"):
        ed.range(10).map_batches(Model, compute=ed.ActorPoolStrategy(size=1),
                                 num_gpus=1).take_all()
    with pytest.raises(ResourceError, match="CPU"):
        ed.range(10).map_batches(Model, compute=ed.ActorPoolStrategy(size=3)).take_all()


class AddConstant:
    def __init__(self, k: int) -> None:
        import os

        self.k = k
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["id"])
        return {"id": batch["id"] + self.k, "pid": np.full(n, self.pid)}


def test_actor_pool_as_large_as_the_machine_with_a_read_in_front(
    ember_local: Any, tmp_path: Path
) -> None:
    ed.range(4000, parallelism=8).write_parquet(str(tmp_path / "in"))
    ds = ed.read_parquet(str(tmp_path / "in")).map_batches(
        AddConstant, compute=ed.ActorPoolStrategy(size=2), fn_constructor_args=(10,),
        batch_size=100)
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == [i + 10 for i in range(4000)]
    assert len({r["pid"] for r in rows}) <= 2  # constructed once per actor, two actors
    assert ds.stats().operators[1].actors_peak == 2


def _slow(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import time

    time.sleep(0.2)
    return batch


def test_a_pool_fed_one_block_at_a_time_gives_work_to_every_actor(ember_local: Any) -> None:
    # Blocks arrive slower than the actors finish them, so every actor is idle when one comes:
    # the pool must still spread them (a user sizing a pool to 2 expects both to work).
    ds = ed.range(6, parallelism=6).map_batches(_slow, batch_size=1, num_cpus=0.5).map_batches(
        AddConstant, compute=ed.ActorPoolStrategy(size=2), fn_constructor_args=(0,),
        batch_size=1, num_cpus=0.5)
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == list(range(6))
    per_actor = collections.Counter(r["pid"] for r in rows)
    assert len(per_actor) == 2 and min(per_actor.values()) >= 2, per_actor


class _KillsItsActor:
    """Kills its own process on the block holding id 0, every time (a native crash, say)."""

    def __init__(self, constructed: str) -> None:
        import os

        with open(constructed, "a") as f:
            f.write(f"{os.getpid()}\n")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import os
        import signal

        if batch["id"][0] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return batch


def test_a_block_that_kills_every_actor_it_reaches_fails_after_the_retries(
        ember_local: Any, tmp_path: Path) -> None:
    constructed = tmp_path / "constructed"
    ed.DataContext.update(actor_block_retries=1)
    try:
        ds = ed.range(40, parallelism=4).map_batches(
            _KillsItsActor, fn_constructor_args=(str(constructed),), batch_size=10,
            compute=ed.ActorPoolStrategy(size=1))
        with pytest.raises(ActorDiedError, match=r"MapBatches\(_KillsItsActor\): the actor "
                           r"running a block died, and so did 1 other given the same block.*"
                           r"actor_block_retries=1"):
            ds.take_all()
    finally:
        ed.DataContext.update(actor_block_retries=3)
    # The first actor and the one that got the block again; no third.
    assert len(constructed.read_text().split()) == 2


def test_a_udf_constructor_that_raises_fails_with_its_own_error_without_retries(
        ember_local: Any, tmp_path: Path) -> None:
    constructed = tmp_path / "constructed"

    class NoModel:
        def __init__(self) -> None:
            with open(constructed, "a") as f:
                f.write("x\n")
            raise FileNotFoundError("model.bin")

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return batch

    with pytest.raises(FileNotFoundError, match=r"(?s)model.bin.*raised while constructing "
                       r"MapBatches\(\S*NoModel\) in an actor of its pool"):
        ed.range(40, parallelism=4).map_batches(
            NoModel, compute=ed.ActorPoolStrategy(size=2), batch_size=10).take_all()
    # At most once per actor of the pool (the second may be stopped before it is built): no
    # actor is rebuilt to retry.
    assert 1 <= len(constructed.read_text().split()) <= 2


def test_autoscaling_actor_pool_stays_within_bounds(ember_local: Any) -> None:
    ds = ed.range(2000, parallelism=10).map_batches(
        AddConstant, compute=ed.ActorPoolStrategy(min_size=1, max_size=2),
        fn_constructor_kwargs={"k": 1}, num_cpus=0.5)
    assert ids(ds) == [i + 1 for i in range(2000)]
    assert 1 <= ds.stats().operators[1].actors_peak <= 2


def test_class_needs_actor_pool(ember_local: Any) -> None:
    with pytest.raises(ValueError, match="ActorPoolStrategy"):
        ed.range(3).map_batches(AddConstant)


def test_memory_budget_bounds_blocks_in_flight(ember_local: Any) -> None:
    block_bytes = 100_000 * 8
    budget = 6 * block_bytes
    ed.DataContext.set_current(ed.DataContext(memory_budget_bytes=budget,
                                              enable_progress_bars=False))
    try:
        ds = ed.range(100_000 * 40, parallelism=40).map_batches(
            lambda b: {"id": b["id"] * 2}, batch_size=None)
        total = 0
        for batch in ds.iter_batches(batch_size=50_000):
            total += len(batch["id"])
        assert total == 4_000_000
        stats = ds.stats()
        assert 0 < stats.peak_bytes_in_flight <= budget
        assert stats.over_budget_launches == 0
    finally:
        ed.DataContext.set_current(ed.DataContext())


@pytest.mark.parametrize("ember_local", [{"object_store_memory": 96 * 2**20}], indirect=True)
def test_default_budget_is_half_the_object_store(ember_local: Any) -> None:
    ds = ed.range(1000).map_batches(lambda b: b)
    assert ds.count() == 1000
    assert ds.stats().memory_budget_bytes == 48 * 2**20
    assert "of a 48.0 MiB budget" in str(ds.stats())


def test_excluded_cpus_keep_tasks_running_and_refuse_a_pool_that_cannot_start(
        ember_local: Any) -> None:
    ed.DataContext.update(excluded_cpus=2)  # e.g. a trainer's workers hold both CPUs
    try:
        assert ed.range(100, parallelism=4).map_batches(lambda b: b).count() == 100
        with pytest.raises(ResourceError, match=r"CPU=0 \(CPUs per node: 0; 2 held for other"):
            ed.range(10).map_batches(_BatchLengths, compute=ed.ActorPoolStrategy(size=1)).count()
    finally:
        ed.DataContext.set_current(ed.DataContext())


def test_a_pipeline_whose_tasks_do_not_finish_says_what_they_asked_for(
        ember_local: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from ember.data import _executor

    monkeypatch.setattr(_executor, "STALL_GRACE_S", 0.2)

    def slow(batch: dict[str, Any]) -> dict[str, Any]:
        time.sleep(1.5)
        return batch

    with caplog.at_level(logging.WARNING, logger="ember.data"):
        assert ed.range(2, parallelism=1).map_batches(slow).count() == 2
    [message] = [r.getMessage() for r in caplog.records if "no task has finished" in r.getMessage()]
    # What the tasks ask for, and what the node has (how much is free depends on the moment).
    assert re.search(r"MapBatches\(.*slow\): CPU 1 .*node local \(127\.0\.0\.1\): CPU [\d.]+ "
                     r"free of 2", message), message


def test_limit_take_and_preserve_order(ember_local: Any) -> None:
    assert len(ed.range(1000).limit(17).take_all()) == 17
    ed.DataContext.update(preserve_order=True)
    try:
        assert [r["id"] for r in ed.range(1000, parallelism=8).take(5)] == [0, 1, 2, 3, 4]
        assert [r["id"] for r in ed.range(100, parallelism=8).take_all()] == list(range(100))
        joined = ed.range(1000, parallelism=50).map(lambda r: r, num_cpus=0.5).map_batches(
            _BatchLengths(), batch_size=100)
        assert [r["id"] for r in joined.take_all()] == list(range(1000))
    finally:
        ed.DataContext.set_current(ed.DataContext())


def test_take_gives_the_first_rows_in_order_though_later_blocks_finish_first(
        ember_local: Any) -> None:
    def first_block_is_slow(batch: dict[str, Any]) -> dict[str, Any]:
        if batch["id"][0] == 0:
            time.sleep(1)
        return batch

    ds = ed.range(40, override_num_blocks=4).map_batches(first_block_is_slow)
    assert ds.take(3) == [{"id": 0}, {"id": 1}, {"id": 2}]  # as Ray's docs show it
    assert list(ds.take_batch(2)["id"]) == [0, 1]


def test_whole_dataset_consumers_give_rows_in_order_though_later_blocks_finish_first(
        ember_local: Any) -> None:
    """take_all, to_pandas and materialize gather every block anyway: they hand the rows back
    in the dataset's order (as Ray's do in practice), without making the execution wait."""
    def first_block_is_slow(batch: dict[str, Any]) -> dict[str, Any]:
        if batch["id"][0] == 0:
            time.sleep(0.5)
        return batch

    ds = ed.range(40, override_num_blocks=4).map_batches(first_block_is_slow)
    assert [r["id"] for r in ds.take_all()] == list(range(40))
    assert ds.to_pandas()["id"].tolist() == list(range(40))
    materialized = ds.materialize()
    assert [r["id"] for r in materialized.iter_rows()] == list(range(40))
    assert [r["id"] for r in materialized.map(lambda r: r).take_all()] == list(range(40))


def test_filter_takes_arguments_and_a_class_as_map_does(ember_local: Any) -> None:
    class AtLeast:
        def __init__(self, floor: int) -> None:
            self.floor = floor

        def __call__(self, row: dict[str, Any], step: int, *, offset: int) -> bool:
            return row["id"] >= self.floor and (row["id"] + offset) % step == 0

    ds = ed.range(20)
    assert ids(ds.filter(lambda r, n: r["id"] < n, fn_args=(3,))) == [0, 1, 2]
    kept = ds.filter(AtLeast, concurrency=1, fn_args=(5,), fn_kwargs={"offset": 1},
                     fn_constructor_args=(10,))
    assert ids(kept) == [14, 19]


def test_column_operations(ember_local: Any) -> None:
    ds = ed.from_items([{"a": i, "b": -i} for i in range(5)])
    assert ds.add_column("c", lambda df: df["a"] + 1).select_columns(["c"]).take(1) == [
        {"c": 1}]
    assert ds.drop_columns(["a"]).columns() == ["b"]
    assert ds.rename_columns({"a": "x"}).columns() == ["x", "b"]
    assert ds.flat_map(lambda r: [r, r]).count() == 10


def test_sort_shuffle_repartition(ember_local: Any) -> None:
    ds = ed.range(500, parallelism=5)
    assert [r["id"] for r in ds.random_shuffle(seed=3).sort("id").take_all()] == list(range(500))
    desc = [r["id"] for r in ds.sort("id", descending=True).take_all()]
    assert desc == sorted(range(500), reverse=True)
    assert ds.repartition(7).num_blocks() == 7
    assert ids(ds.random_shuffle(seed=1)) == list(range(500))


def test_groupby(ember_local: Any) -> None:
    ds = ed.from_items([{"k": i % 3, "v": float(i)} for i in range(30)])
    assert sorted(ds.groupby("k").count().take_all(), key=lambda r: r["k"]) == [
        {"k": 0, "count()": 10}, {"k": 1, "count()": 10}, {"k": 2, "count()": 10}]
    sums = sorted(ds.groupby("k").sum("v").take_all(), key=lambda r: r["k"])
    assert [r["sum(v)"] for r in sums] == [135.0, 145.0, 155.0]
    assert ds.groupby(None).max("v").take_all() == [{"max(v)": 29.0}]
    std = ds.groupby(None).std("v").take_all()[0]["std(v)"]
    assert std == pytest.approx(np.std(np.arange(30.0), ddof=1))
    means = sorted(ds.groupby("k").mean("v").take_all(), key=lambda r: r["k"])
    assert [r["mean(v)"] for r in means] == [13.5, 14.5, 15.5]
    groups = ds.groupby("k").map_groups(lambda g: {"k": g["k"][:1], "n": [len(g["k"])]})
    assert sorted((r["k"], r["n"]) for r in groups.take_all()) == [(0, 10), (1, 10), (2, 10)]


def test_union_zip_split(ember_local: Any) -> None:
    a, b = ed.range(10), ed.range(5)
    assert ids(a.union(b)) == sorted([*range(10), *range(5)])
    zipped = ed.range(20, parallelism=3).zip(
        ed.range(20, parallelism=2).map(lambda r: {"sq": r["id"] ** 2})).take_all()
    assert all(r["sq"] == r["id"] ** 2 for r in zipped) and len(zipped) == 20
    parts = ed.range(100).split(3, equal=True)
    assert [p.count() for p in parts] == [33, 33, 33]
    train, test = ed.range(100).train_test_split(0.25)
    assert (train.count(), test.count()) == (75, 25)
    assert ids(test) == list(range(75, 100))
    sample = ed.range(1000).random_sample(0.5, seed=0).count()
    assert 350 < sample < 650


def test_iteration_apis(ember_local: Any) -> None:
    ds = ed.range(100)
    assert sorted(r["id"] for r in ds.iter_rows()) == list(range(100))
    assert len(list(ds.iter_batches(batch_size=30, drop_last=True))) == 3
    assert sorted(ds.to_pandas()["id"]) == list(range(100))
    assert ds.schema().names == ["id"]


def test_iter_torch_batches_gives_tensors_of_the_asked_dtype(ember_local: Any) -> None:
    torch = pytest.importorskip("torch")
    batches = list(ed.range(100).iter_torch_batches(batch_size=30, dtypes=torch.float32))
    assert isinstance(batches[0]["id"], torch.Tensor) and batches[0]["id"].dtype == torch.float32
    assert sum(len(b["id"]) for b in batches) == 100


def test_early_exit_releases_actors(ember_local: Any) -> None:
    ds = ed.range(5000, parallelism=10).map_batches(
        AddConstant, compute=ed.ActorPoolStrategy(size=1), fn_constructor_args=(0,))
    for _ in ds.iter_batches(batch_size=10):
        break
    # the pool's actor was killed: both CPUs are free again
    deadline = time.monotonic() + 10
    while ember.available_resources().get("CPU") != 2.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ember.available_resources().get("CPU") == 2.0


def test_file_round_trips(ember_local: Any, tmp_path: Path) -> None:
    ds = ed.from_items([{"a": i, "s": str(i)} for i in range(50)])
    for fmt in ("parquet", "csv", "json"):
        getattr(ds, f"write_{fmt}")(str(tmp_path / fmt))
        back = getattr(ed, f"read_{fmt}")(str(tmp_path / fmt))
        rows = sorted(back.take_all(), key=lambda r: r["a"])
        assert [r["a"] for r in rows] == list(range(50)), fmt
    ed.from_numpy(np.arange(12).reshape(6, 2)).write_numpy(str(tmp_path / "npy"))
    back_np = ed.read_numpy(str(tmp_path / "npy")).take_batch(10)["data"]
    assert back_np.shape == (6, 2)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ed.read_parquet(str(tmp_path / "missing"))


def test_fsspec_url(ember_local: Any, tmp_path: Path) -> None:
    ed.range(10).write_parquet(f"file://{tmp_path}/out")
    assert ed.read_parquet(f"file://{tmp_path}/out").count() == 10


def test_stats_before_and_after(ember_local: Any) -> None:
    ds = ed.range(100).map_batches(lambda b: b)
    assert "not been executed" in str(ds.stats())
    ds.count()
    text = str(ds.stats())
    assert "CPU time" in text and "peak" in text and "100 rows" in text


def test_bad_arguments_say_the_fix(ember_local: Any) -> None:
    # from_items stores its blocks, which starts a runtime (as in Ray): the fixture stops it.
    with pytest.raises(ValueError, match="batch_format"):
        ed.from_items([1]).map_batches(lambda b: b, batch_format="arrow")
    with pytest.raises(ValueError, match="min_size"):
        ed.ActorPoolStrategy(min_size=3, max_size=2)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        ed.DataContext(memory_budget_bytes=0)


class BadRowError(Exception):
    pass


@pytest.mark.parametrize("build, operator, shows", [
    (lambda ds: ds.map(_fail_on_7), "Map(_fail_on_7)", "'id': 7"),
    (lambda ds: ds.filter(_fail_on_7), "Filter(_fail_on_7)", "'id': 7"),
    (lambda ds: ds.map_batches(_fail_batch, batch_size=4), "MapBatches(_fail_batch)",
     "'text': ['aaaaaaaaaa"),
])
def test_a_udf_error_keeps_its_type_and_names_the_operator_and_the_data(
        ember_local: Any, build: Any, operator: str, shows: str) -> None:
    ds = ed.range(10, parallelism=1).map(lambda r: {"id": r["id"], "text": "a" * 500})
    with pytest.raises(BadRowError) as info:
        build(ds).take_all()
    message = str(info.value)
    assert "bad data" in message and operator in message and shows in message
    assert "a" * 400 not in message  # long values are truncated


def _fail_on_7(row: dict[str, Any]) -> Any:
    if row["id"] == 7:
        raise BadRowError("bad data")
    return row


def _fail_batch(batch: dict[str, Any]) -> Any:
    raise BadRowError("bad data")


def test_concurrency_sizes_actor_pools_and_caps_tasks(ember_local: Any, tmp_path: Path) -> None:
    fixed = ed.range(200, parallelism=8).map_batches(AddConstant, concurrency=2,
                                                     fn_constructor_args=(1,), num_cpus=0.5)
    assert ids(fixed) == [i + 1 for i in range(200)]
    assert fixed.stats().operators[1].actors_peak == 2
    scaled = ed.range(200, parallelism=8).map_batches(AddConstant, concurrency=(1, 2),
                                                      fn_constructor_args=(0,), num_cpus=0.5)
    assert ids(scaled) == list(range(200))
    assert 1 <= scaled.stats().operators[1].actors_peak <= 2

    def note_running(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import time

        mark = tmp_path / f"{batch['id'][0]}"
        mark.write_text(f"{time.monotonic()}")
        time.sleep(0.2)
        mark.write_text(f"{mark.read_text()} {time.monotonic()}")
        return batch

    one_at_a_time = ed.range(6, parallelism=6).map_batches(note_running, concurrency=1,
                                                           batch_size=1,
                                                           num_cpus=0.5)
    assert ids(one_at_a_time) == list(range(6))
    spans = sorted(tuple(map(float, p.read_text().split())) for p in tmp_path.iterdir())
    assert len(spans) == 6
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))

    with pytest.raises(ValueError, match="callable class"):
        ed.range(3).map_batches(lambda b: b, concurrency=(1, 2))
    with pytest.raises(ValueError, match="not both"):
        ed.range(3).map_batches(AddConstant, concurrency=2,
                                compute=ed.ActorPoolStrategy(size=2))
    with pytest.raises(ValueError, match="initial_size"):
        ed.range(3).map(AddConstant, concurrency=(1, 2, 5))
    assert ed.range(4).filter(lambda r: r["id"] % 2 == 0, concurrency=1).count() == 2


def test_split_takes_locality_hints(ember_local: Any) -> None:
    parts = ed.range(10, parallelism=2).split(2, locality_hints=["worker-a", "worker-b"])
    assert sorted(i for p in parts for i in ids(p)) == list(range(10))
    with pytest.raises(ValueError, match="one per split"):
        ed.range(10).split(2, locality_hints=["only-one"])
