"""Consuming a dataset: local shuffling (the pure ``ShufflingBatcher``, then through
``iter_batches``, ``iter_torch_batches`` and a ``DataIterator``), ``collate_fn``, and what
happens to running work when the consumer leaves early."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

import ember.data as ed
from ember.data._block import ShufflingBatcher
from ember.testing import eventually


def blocks(*sizes: int) -> list[pa.Table]:
    out, start = [], 0
    for size in sizes:
        out.append(pa.table({"id": np.arange(start, start + size)}))
        start += size
    return out


def run(batcher: ShufflingBatcher, source: list[pa.Table]) -> list[list[int]]:
    batches = [b for block in source for b in batcher.add(block)]
    batches += list(batcher.finish())
    return [b.column("id").to_pylist() for b in batches]


def test_shuffling_batcher_hands_out_every_row_once_in_batches() -> None:
    out = run(ShufflingBatcher(10, 30, seed=1), blocks(7, 25, 3, 40, 5))
    flat = [i for batch in out for i in batch]
    assert sorted(flat) == list(range(80))
    assert [len(b) for b in out] == [10] * 8
    assert flat != list(range(80))  # shuffled
    short = run(ShufflingBatcher(10, 10, seed=1), blocks(25))
    assert [len(b) for b in short] == [10, 10, 5]
    assert [len(b) for b in run(ShufflingBatcher(10, 10, seed=1, drop_last=True),
                                blocks(25))] == [10, 10]


def test_shuffling_batcher_draws_only_from_a_full_buffer() -> None:
    batcher = ShufflingBatcher(4, 20, seed=0)
    assert list(batcher.add(blocks(19)[0])) == []  # not yet buffer_size rows
    first = list(batcher.add(pa.table({"id": np.arange(19, 40)})))
    # 40 rows: batches leave while at least 20 are buffered (40, 36, ..., 20), 16 stay; the
    # rows of both blocks were mixed before the first batch left.
    assert len(first) == 6 and any(v >= 19 for v in first[0].column("id").to_pylist())
    assert sum(len(b) for b in batcher.finish()) == 16


def test_shuffling_batcher_is_repeatable_with_a_seed() -> None:
    source = blocks(13, 30, 17)
    assert run(ShufflingBatcher(8, 16, seed=7), source) == run(
        ShufflingBatcher(8, 16, seed=7), source)
    assert run(ShufflingBatcher(8, 16, seed=7), source) != run(
        ShufflingBatcher(8, 16, seed=8), source)


def test_shuffling_batcher_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="needs a batch_size"):
        ShufflingBatcher(None, 100)
    with pytest.raises(ValueError, match=">= batch_size"):
        ShufflingBatcher(64, 10)


def test_local_shuffle_through_every_iterator(ember_local: Any) -> None:
    ds = ed.from_items([{"id": i} for i in range(200)], override_num_blocks=4)

    def order(**kw: Any) -> list[int]:
        return [int(i) for b in ds.iter_batches(batch_size=16, **kw) for i in b["id"]]

    plain = order()
    shuffled = order(local_shuffle_buffer_size=50, local_shuffle_seed=3)
    assert sorted(shuffled) == plain == list(range(200)) and shuffled != plain
    assert order(local_shuffle_buffer_size=50, local_shuffle_seed=3) == shuffled

    torch_ids = [int(i) for b in ds.iter_torch_batches(
        batch_size=16, local_shuffle_buffer_size=50, local_shuffle_seed=3) for i in b["id"]]
    assert torch_ids == shuffled

    (shard,) = ds.streaming_split(1)
    shard_ids = [int(i) for b in shard.iter_batches(
        batch_size=16, local_shuffle_buffer_size=50, local_shuffle_seed=3) for i in b["id"]]
    assert sorted(shard_ids) == plain and shard_ids != plain
    with pytest.raises(ValueError, match="needs a batch_size"):
        ds.iter_batches(batch_size=None, local_shuffle_buffer_size=10)


def test_iter_torch_batches_with_a_collate_fn(ember_local: Any) -> None:
    ds = ed.from_items([{"a": i, "b": 10 * i} for i in range(6)], override_num_blocks=1)

    def stack(batch: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(v) for v in batch.values()], dim=1)

    out = list(ds.iter_torch_batches(batch_size=4, collate_fn=stack))
    assert [t.shape for t in out] == [torch.Size([4, 2]), torch.Size([2, 2])]
    assert out[0][1].tolist() == [1, 10]
    pairs = list(ds.iter_torch_batches(batch_size=6, device="cpu", collate_fn=lambda b: (
        torch.as_tensor(b["a"]), torch.as_tensor(b["b"]))))
    assert pairs[0][1].tolist() == [0, 10, 20, 30, 40, 50]
    with pytest.raises(ValueError, match="not both"):
        ds.iter_torch_batches(dtypes=torch.float32, collate_fn=stack)


def test_leaving_early_closes_generator_udfs_that_are_still_running(
    ember_local: Any, tmp_path: Path
) -> None:
    def slow_rows(batch: dict[str, np.ndarray]) -> Any:
        import time

        first = int(batch["id"][0])
        (tmp_path / f"started-{first}").touch()
        try:
            for _ in range(1 if first == 0 else 200):  # block 0 is done at once, 1 runs on
                yield batch
                time.sleep(0.1)
        finally:
            (tmp_path / f"closed-{first}").write_text(repr(time.time()))

    for prefetch in (1, 0):
        for old in [*tmp_path.glob("closed-*"), *tmp_path.glob("started-*")]:
            old.unlink()
        ds = ed.range(2, override_num_blocks=2).map_batches(slow_rows, batch_size=1)
        batches = ds.iter_batches(batch_size=1, prefetch_batches=prefetch)
        assert next(batches)["id"].tolist() == [0]
        # block 1's UDF runs (on a busy machine its worker may start late: a task cancelled
        # before it starts has no generator to close)
        eventually(lambda: (tmp_path / "started-1").exists(), timeout=30,
                   what="block 1's generator UDF to start")
        left_at = time.time()
        batches.close()  # as leaving a for loop does
        closed = tmp_path / "closed-1"  # written, not only made: write_text does both
        eventually(lambda f=closed: f.exists() and f.read_text() != "", timeout=20,
                   what="the running generator UDF to be closed")
        took = float(closed.read_text()) - left_at
        assert took < 1.0, f"prefetch={prefetch}: closed {took:.2f} s after the consumer left"


def test_a_batch_within_one_chunk_is_converted_with_at_most_one_copy() -> None:
    # A block as read_parquet makes it: several chunks (row groups) per column; batches cut
    # from it lie in one chunk. zero_copy batches are views on that chunk; default batches are
    # writable copies of the same values (one copy: the driver's time per batch, issue 20).
    from ember.data._block import Batcher, block_to_batch

    chunks = [np.arange(i * 100, (i + 1) * 100, dtype=np.float64) for i in range(4)]
    block = pa.table({"x": pa.chunked_array(chunks), "id": pa.chunked_array(chunks)})
    batches = list(Batcher(25).add(block))
    assert len(batches) == 16
    for i, piece in enumerate(batches):
        assert piece.column("x").num_chunks == 1
        view = block_to_batch(piece, "numpy", zero_copy=True)
        chunk = chunks[i // 4]
        assert np.shares_memory(view["x"], piece.column("x").chunk(0).to_numpy())
        assert not view["x"].flags.writeable
        copy = block_to_batch(piece, "numpy")
        assert copy["x"].flags.writeable and not np.shares_memory(copy["x"], view["x"])
        expected = chunk[(i % 4) * 25:(i % 4 + 1) * 25]
        np.testing.assert_array_equal(view["x"], expected)
        np.testing.assert_array_equal(copy["id"], expected)


def test_numbers_cross_between_numpy_and_arrow_by_their_buffers() -> None:
    from ember.data._block import batch_to_block, block_to_batch

    columns = {"i8": np.arange(-5, 5, dtype=np.int8), "u64": np.arange(10, dtype=np.uint64),
               "f16": np.linspace(0, 1, 10).astype(np.float16),
               "big": np.arange(10, dtype=">i4"),  # big-endian: Arrow holds little-endian
               "strided": np.arange(20, dtype=np.float64)[::2],
               "nan": np.array([np.nan, *range(9)], dtype=np.float32)}
    block = batch_to_block(columns)
    assert block.column("big").type == pa.int32() and block.column("nan").null_count == 0
    back = block_to_batch(block, "numpy")
    for name, values in columns.items():
        np.testing.assert_array_equal(back[name], values)
        assert back[name].dtype == values.dtype.newbyteorder("=")
        assert back[name].flags.writeable
    # a view of a block read elsewhere stays read-only: writing into it would change the block
    shared = block_to_batch(block.slice(2, 5), "numpy", zero_copy=True)
    assert not shared["u64"].flags.writeable and shared["u64"].tolist() == [2, 3, 4, 5, 6]
    with_null = block_to_batch(pa.table({"x": pa.array([1.0, None])}), "numpy")
    assert np.isnan(with_null["x"][1])


def test_numeric_batches_never_import_pandas(tmp_path: Path) -> None:
    # pyarrow's pa.array/to_numpy import pandas on first use: 0.2 s and tens of MiB in every
    # process that touches a batch. Numbers from a pipeline must not need it, driver or worker.
    import subprocess
    import sys

    script = tmp_path / "no_pandas.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "import ember, ember.data as ed\n"
        "def add_one(batch):\n"
        "    return {k: v + 1 for k, v in batch.items()}\n"
        "def workers_pandas(batch):\n"
        "    return {'pandas': np.full(len(batch['id']), int('pandas' in sys.modules))}\n"
        "ember.init(num_cpus=2)\n"
        "total = sum(int(b['id'].sum()) for b in ed.range(10_000).map_batches(add_one)"
        ".iter_batches(batch_size=4096))\n"
        "assert total == sum(range(1, 10_001)), total\n"
        "used = ed.range(4000, override_num_blocks=4).map_batches(add_one)"
        ".map_batches(workers_pandas).take_all()\n"
        "print('driver', int('pandas' in sys.modules), 'workers', max(r['pandas'] for r in used))\n"
        "ember.shutdown()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["driver", "0", "workers", "0"], out.stdout
