"""Programs written for Ray 2.5's Data API (the project's reference) run on ember.data with
only the imports changed: the spellings 2.5 had and later releases dropped or renamed."""

from __future__ import annotations

import itertools
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
    with pytest.raises(ValueError, match="compute='actor' is not a strategy"):
        ed.range(3).map_batches(lambda b: b, compute="actor")


def test_max_tasks_in_flight_per_actor_caps_calls_per_actor() -> None:
    from ember.data._admission import AdmissionPolicy, OperatorView, Snapshot

    def one_busy_actor(per_actor: int | None) -> Snapshot:
        pool = OperatorView(compute="actors", is_source=False, has_input=True, running=1,
                            est_output_bytes=1, next_input_bytes=1, actors_alive=1,
                            min_actors=1, max_actors=1, tasks_per_actor=per_actor)
        return Snapshot((pool,), 0, 2.0, 0)

    policy = AdmissionPolicy(1 << 30, actor_tasks_in_flight=2)
    assert policy.next_launch(one_busy_actor(None)) == 0  # the default: 2 calls per actor
    assert policy.next_launch(one_busy_actor(1)) is None
    with pytest.raises(ValueError, match="max_tasks_in_flight_per_actor=0"):
        ed.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=0)


def test_pool_with_one_call_per_actor_runs(ember_local: Any) -> None:
    strategy = ed.ActorPoolStrategy(min_size=1, max_size=2, max_tasks_in_flight_per_actor=1)
    assert ids(ed.range(20, parallelism=4).map_batches(Plus, compute=strategy)) == list(
        range(1, 21))


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


# -- 2. Dataset methods of 2.5 -----------------------------------------------------------------
def test_execution_and_format_queries(ember_local: Any) -> None:
    ds = ed.range(10, parallelism=2).map(lambda r: {"id": r["id"] + 1})
    assert not ds.is_fully_executed() and ds.lazy() is ds
    done = ds.fully_executed()
    assert isinstance(done, ed.MaterializedDataset) and done.is_fully_executed()
    assert ids(done) == list(range(1, 11)) and ds.materialize().is_fully_executed()
    assert ds.default_batch_format() is dict and isinstance(ds.take_batch(2), dict)
    assert ds.dataset_format() == "arrow"
    assert done.size_bytes() == ds.size_bytes() == 80  # ten int64 values


def test_input_files_survive_transforms_and_materialize(ember_local: Any, tmp_path: Any
                                                        ) -> None:
    for i in range(2):
        (tmp_path / f"part{i}.csv").write_text(f"x\n{i}\n")
    ds = ed.read_csv(str(tmp_path)).map(lambda r: r)
    expected = [str(tmp_path / "part0.csv"), str(tmp_path / "part1.csv")]
    assert sorted(ds.input_files()) == expected
    assert sorted(ds.materialize().input_files()) == expected
    assert ed.range(3).input_files() == []


def test_refs_in_other_shapes(ember_local: Any) -> None:
    ds = ed.from_items([{"a": i, "b": 2 * i} for i in range(6)], parallelism=2)
    numpy_batches = ember.get(ds.to_numpy_refs())
    assert [list(b) for b in numpy_batches] == [["a", "b"], ["a", "b"]]
    assert np.concatenate([b["b"] for b in numpy_batches]).tolist() == [0, 2, 4, 6, 8, 10]
    column = ember.get(ds.to_numpy_refs(column="a"))
    assert np.concatenate(column).tolist() == [0, 1, 2, 3, 4, 5]
    frames = ember.get(ds.to_pandas_refs())
    assert sum(len(f) for f in frames) == 6 and list(frames[0].columns) == ["a", "b"]
    blocks = ember.get(ds.get_internal_block_refs())
    assert sum(b.num_rows for b in blocks) == 6
    with pytest.raises(ValueError, match="column='c'"):
        ember.get(ds.to_numpy_refs(column="c"))


def test_randomize_block_order_moves_blocks_not_rows(ember_local: Any) -> None:
    ds = ed.range(40, parallelism=8)
    orders = {tuple(r["id"] for r in ds.randomize_block_order(seed=s).take_all())
              for s in range(4)}
    assert len(orders) > 1  # the order changes with the seed
    for order in orders:
        assert sorted(order) == list(range(40))
        runs = [order[i:i + 5] for i in range(0, 40, 5)]  # each block of 5 stays whole
        assert all(list(run) == list(range(run[0], run[0] + 5)) for run in runs)
    same = ds.randomize_block_order(seed=3)
    assert same.take_all() == same.take_all()


def test_split_proportionately(ember_local: Any) -> None:
    parts = ed.range(10).split_proportionately([0.5, 0.2])
    assert [ids(p) for p in parts] == [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
    assert [p.count() for p in ed.range(3).split_proportionately([0.4, 0.3])] == [1, 1, 1]
    with pytest.raises(ValueError, match="summing to less than 1"):
        ed.range(10).split_proportionately([0.5, 0.5])
    with pytest.raises(ValueError, match="non-empty"):
        ed.range(2).split_proportionately([0.3, 0.3])


def test_iterator_is_a_data_iterator(ember_local: Any) -> None:
    it = ed.range(10).iterator()
    assert isinstance(it, ed.DataIterator) and ed.DatasetIterator is ed.DataIterator
    assert sorted(int(v) for b in it.iter_batches(batch_size=3) for v in b["id"]) == list(
        range(10))
    assert sorted(r["id"] for r in it.iter_rows()) == list(range(10))  # a second epoch


def test_to_torch_gives_features_and_label(ember_local: Any) -> None:
    import torch

    ds = ed.from_items([{"x": float(i), "y": 2.0 * i, "label": i % 2} for i in range(5)])
    batches = list(ds.to_torch(label_column="label", batch_size=2))
    assert len(batches) == 3
    features, label = batches[0]
    assert features.shape == (2, 2) and label.shape == (2, 1)
    assert features.tolist() == [[0.0, 0.0], [1.0, 2.0]] and label.tolist() == [[0], [1]]
    features, label = next(iter(ds.to_torch(
        label_column="label", feature_columns=[["x"], ["y"]], batch_size=5,
        unsqueeze_label_tensor=False, label_column_dtype=torch.float32)))
    assert [f.shape for f in features] == [(5, 1), (5, 1)]
    assert label.shape == (5,) and label.dtype == torch.float32
    features, label = next(iter(ds.to_torch(feature_columns={"a": ["x", "y"]}, batch_size=5)))
    assert label is None and features["a"].shape == (5, 2)
    with pytest.raises(ValueError, match="'nope'"):
        next(iter(ds.to_torch(label_column="nope")))


class Collect(ed.Datasink):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_write_start(self, schema: Any = None) -> None:
        self.events.append(("start", schema.names))

    def write(self, blocks: Any, ctx: Any) -> Any:
        return ctx.task_idx, [int(v) for b in blocks for v in b.column("id").to_pylist()]

    def on_write_complete(self, write_result: Any) -> None:
        self.events.append(("complete", write_result.num_rows, write_result.write_returns))

    def on_write_failed(self, error: Exception) -> None:
        self.events.append(("failed", str(error)))


def test_write_datasink_callbacks_and_results(ember_local: Any) -> None:
    sink = Collect()
    ed.range(10, parallelism=3).write_datasink(sink)
    assert sink.events[0] == ("start", ["id"])
    kind, rows, returns = sink.events[1]
    assert kind == "complete" and rows == 10
    assert [idx for idx, _ in returns] == [0, 1, 2]
    assert sorted(v for _, values in returns for v in values) == list(range(10))

    def boom(row: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bad row")

    failing = Collect()
    with pytest.raises(RuntimeError, match="bad row"):
        ed.range(3).map(boom).write_datasink(failing)
    assert failing.events[-1][0] == "failed" and "bad row" in failing.events[-1][1]
    with pytest.raises(TypeError, match="Datasink"):
        ed.range(3).write_datasink(object())


class Legacy25Datasource(ed.Datasource):
    """A 2.5 datasource that writes, with its write arguments."""

    def __init__(self) -> None:
        self.completed: list[Any] = []

    def write(self, blocks: Any, ctx: Any, **write_args: Any) -> Any:
        return sum(b.num_rows for b in blocks) * write_args["scale"]

    def on_write_complete(self, write_results: list[Any], **kwargs: Any) -> None:
        self.completed.append((sum(write_results), kwargs))


@ember.remote
def count_rows(block: Any) -> int:
    return int(block.num_rows)


class DoWriteDatasource(ed.Datasource):
    """A datasource of the older API: do_write runs on the driver and starts its own tasks."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def do_write(self, blocks: list[Any], metadata: list[Any], ray_remote_args: dict[str, Any],
                 **write_args: Any) -> list[Any]:
        if write_args.get("fail"):
            raise OSError("disk full")
        self.events.append(("rows", [m.num_rows for m in metadata]))
        return [count_rows.remote(block) for block in blocks]

    def on_write_complete(self, write_results: list[Any], **kwargs: Any) -> None:
        self.events.append(("complete", write_results))

    def on_write_failed(self, write_results: list[Any], error: Exception,
                        **kwargs: Any) -> None:
        self.events.append(("failed", str(error)))


def test_write_datasource_2_5(ember_local: Any) -> None:
    source = Legacy25Datasource()
    ed.range(6, parallelism=2).write_datasource(source, scale=10)
    assert source.completed == [(60, {"scale": 10})]
    older = DoWriteDatasource()
    ed.range(6, parallelism=2).write_datasource(older)
    assert older.events == [("rows", [3, 3]), ("complete", [3, 3])]
    with pytest.raises(OSError, match="disk full"):
        ed.range(2).write_datasource(older, fail=True)
    assert older.events[-1] == ("failed", "disk full")
    with pytest.raises(TypeError, match="no write"):
        ed.range(3).write_datasource(ed.Datasource())


def test_map_groups_with_compute(ember_local: Any) -> None:
    ds = ed.from_items([{"k": i % 3, "v": i} for i in range(9)])
    out = ds.groupby("k").map_groups(
        lambda g: {"k": g["k"][:1], "total": [g["v"].sum()]}, batch_format="numpy",
        compute="actors")
    assert sorted((r["k"], r["total"]) for r in out.take_all()) == [(0, 9), (1, 12), (2, 15)]


# -- 3. DatasetPipeline ------------------------------------------------------------------------
def test_window_reads_per_window_and_transforms_each(ember_local: Any, tmp_path: Any) -> None:
    for i in range(4):
        (tmp_path / f"part{i}.csv").write_text(f"x\n{i}\n{i + 10}\n")
    pipe = ed.read_csv(str(tmp_path)).window(blocks_per_window=2)
    assert isinstance(pipe, ed.DatasetPipeline)
    windows = list(pipe.map(lambda r: {"x": r["x"] * 2}).iter_datasets())
    assert len(windows) == 2
    # Each window reads only its own files.
    assert [len(w.input_files()) for w in windows] == [2, 2]
    assert sorted(r["x"] for w in windows for r in w.take_all()) == sorted(
        2 * v for i in range(4) for v in (i, i + 10))
    assert pipe.count() == 8
    batches = list(pipe.iter_batches(batch_size=3))
    assert [len(b["x"]) for b in batches] == [3, 3, 2]  # batches span windows
    by_bytes = ed.range(8, parallelism=4).window(bytes_per_window=16)  # 2 rows of 8 bytes
    assert [w.count() for w in by_bytes.iter_datasets()] == [2, 2, 2, 2]
    sorted_first = ed.range(6, parallelism=3).sort("id", descending=True).window(
        blocks_per_window=2)  # a barrier first: run in bulk, then windowed
    assert [r["id"] for r in sorted_first.take_all()] == [5, 4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="not both"):
        ed.range(4).window(blocks_per_window=1, bytes_per_window=8)
    with pytest.raises(ValueError, match="blocks_per_window=0"):
        ed.range(4).window(blocks_per_window=0)


def test_repeat_epochs_and_pipeline_consumers(ember_local: Any) -> None:
    calls = ed.range(4, parallelism=2).map_batches(lambda b: {"id": b["id"] + 1})
    pipe = calls.repeat(3)
    epochs = [sorted(r["id"] for r in epoch.iter_rows()) for epoch in pipe.iter_epochs()]
    assert epochs == [[1, 2, 3, 4]] * 3
    assert pipe.count() == 12 and len(pipe.take(5)) == 5
    assert sorted(int(v) for b in pipe.iter_torch_batches(batch_size=4) for v in b["id"]) == (
        sorted([1, 2, 3, 4] * 3))
    shuffled = ed.range(10).repeat(2).random_shuffle_each_window(seed=1)
    assert sorted(r["id"] for r in shuffled.take_all()) == sorted(list(range(10)) * 2)
    doubled = ed.range(3).window(blocks_per_window=1).repeat(2).foreach_window(
        lambda ds: ds.map(lambda r: {"id": r["id"] * 2}))
    assert sorted(r["id"] for r in doubled.take_all()) == [0, 0, 2, 2, 4, 4]
    forever = ed.range(3).repeat()
    assert [r["id"] for r in forever.take(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert len(list(itertools.islice(forever.iter_epochs(), 4))) == 4
    with pytest.raises(ValueError, match="without end"):
        forever.count()
    with pytest.raises(ValueError, match="times=0"):
        ed.range(3).repeat(0)



# -- 4. read_sql -------------------------------------------------------------------------------
def test_read_sql_from_sqlite_in_shares(ember_local: Any, tmp_path: Any) -> None:
    import functools
    import sqlite3

    path = str(tmp_path / "shop.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (id INTEGER, item TEXT, price REAL)")
        db.executemany("INSERT INTO sales VALUES (?, ?, ?)",
                       [(i, f"item{i}", i * 1.5) for i in range(10)])
    db.close()
    connect = functools.partial(sqlite3.connect, path)
    ds = ed.read_sql("SELECT * FROM sales", connect, override_num_blocks=3)
    assert ds.num_blocks() == 3 and ds.columns() == ["id", "item", "price"]
    assert ds.sort("id").take_all()[1] == {"id": 1, "item": "item1", "price": 1.5}
    assert ids(ds) == list(range(10))
    small = ed.read_sql("SELECT id FROM sales WHERE price > ?", connect, sql_params=(9,))
    assert ids(small) == [7, 8, 9]
    connection = sqlite3.connect(path)
    with pytest.raises(TypeError, match="connection_factory"):
        ed.read_sql("SELECT 1", connection)  # a connection, not a factory
    connection.close()
    with pytest.raises(Exception, match="no such table"):
        ed.read_sql("SELECT * FROM nope", connect, override_num_blocks=1).count()
