"""Iterating a dataset that only reads local Parquet, CSV or JSON files: threads of the
iterating process read them (``DataContext.read_local_files_in_process``), with the rows that
reads in tasks give, writable batches, errors that name the file, and nothing left running when
the loop leaves early."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ember.data as ed
from ember.data import DataContext, _block
from ember.testing import eventually
from ember.util.state import summarize_tasks


@pytest.fixture
def context() -> Iterator[None]:
    saved = DataContext.get_current()
    try:
        yield
    finally:
        DataContext.set_current(saved)


def _tasks_run() -> int:
    return int(summarize_tasks()["total_tasks"])


def _write_parquet(folder: Path) -> pd.DataFrame:
    """Three files: one of two row groups, one without column ``b`` and with ``a`` as int32.
    Returns every row as the unified schema reads it (b null where missing)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = []
    for i, rows in enumerate([3000, 2500, 700]):
        ids = np.arange(rows) + 10_000 * i
        table = pa.table({"id": ids, "a": pa.array(ids % 7, pa.int32() if i == 2 else pa.int64()),
                          **({} if i == 2 else {"b": rng.random(rows)})})
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=2000)
        frame = table.to_pandas()
        frame["a"] = frame["a"].astype("int64")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[["id", "a", "b"]]


def _rows(ds: ed.Dataset) -> pd.DataFrame:
    batches = list(ds.iter_batches(batch_size=999, batch_format="pandas"))
    return pd.concat(batches, ignore_index=True).sort_values("id", ignore_index=True)


def test_iterating_local_parquet_reads_here_and_gives_the_rows_that_tasks_give(
        ember_local: Any, tmp_path: Path, context: None) -> None:
    expected = _write_parquet(tmp_path / "in").sort_values("id", ignore_index=True)
    ds = ed.read_parquet(str(tmp_path / "in"))

    before = _tasks_run()
    here = _rows(ds)
    assert _tasks_run() == before, "no task should run: the files are read in this process"
    assert ds.stats().operators[0].rows == len(expected)

    DataContext.update(read_local_files_in_process=False)
    in_tasks = _rows(ds)
    assert _tasks_run() > before

    pd.testing.assert_frame_equal(here, expected)
    pd.testing.assert_frame_equal(in_tasks, expected)
    assert here["b"].isna().sum() == 700  # the file without the column
    # rows, not whole files: every batch but the last has the size asked for
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=999)]
    assert sizes[:-1] == [999] * (len(sizes) - 1) and sum(sizes) == len(expected)


def test_local_csv_and_json_read_here_give_the_rows_tasks_give(
        ember_local: Any, tmp_path: Path, context: None) -> None:
    frame = pd.DataFrame({"id": np.arange(500), "name": [f"n{i}" for i in range(500)]})
    (tmp_path / "csv").mkdir()
    (tmp_path / "json").mkdir()
    for i in range(2):
        part = frame.iloc[i * 250:(i + 1) * 250]
        part.to_csv(tmp_path / "csv" / f"{i}.csv", index=False)
        part.to_json(tmp_path / "json" / f"{i}.jsonl", orient="records", lines=True)
    for ds in (ed.read_csv(str(tmp_path / "csv")), ed.read_json(str(tmp_path / "json"))):
        before = _tasks_run()
        here = _rows(ds)
        assert _tasks_run() == before
        DataContext.update(read_local_files_in_process=False)
        try:
            pd.testing.assert_frame_equal(here, _rows(ds))
        finally:
            DataContext.update(read_local_files_in_process=True)
        pd.testing.assert_frame_equal(here, frame)


def test_batches_are_writable_and_writing_into_one_changes_no_other_data(
        ember_local: Any, tmp_path: Path) -> None:
    expected = _write_parquet(tmp_path / "in")["id"].sort_values().to_numpy()
    read = ed.read_parquet(str(tmp_path / "in"), columns=["id"])
    for ds, options in [(read, {}), (read.materialize(), {}),  # read here, from the store
                        (read.materialize(), {"local_shuffle_buffer_size": 2000})]:
        for _ in range(2):  # a second pass sees what the first one saw
            seen = []
            for batch in ds.iter_batches(batch_size=512, **options):
                seen.append(batch["id"].copy())
                batch["id"] *= -1  # a user's in-place edit: allowed, and local to the batch
            np.testing.assert_array_equal(np.sort(np.concatenate(seen)), expected)


def test_torch_batches_of_a_local_read_come_without_a_non_writable_warning(
        ember_local: Any, tmp_path: Path) -> None:
    _write_parquet(tmp_path / "in")
    ds = ed.read_parquet(str(tmp_path / "in"), columns=["id", "a"])
    # warnings are errors in this suite: torch warns on arrays that are not writable
    total = sum(int(b["id"].shape[0]) for b in ds.iter_torch_batches(batch_size=1000))
    assert total == 6200


def test_a_file_damaged_past_its_footer_is_named_when_read_here(
        ember_local: Any, tmp_path: Path) -> None:
    table = pa.table({"x": np.arange(50_000, dtype=np.float64)})
    pq.write_table(table, tmp_path / "torn.parquet", compression="none")
    data = bytearray((tmp_path / "torn.parquet").read_bytes())
    data[4:200_000] = b"\xff" * (200_000 - 4)  # the column's pages; the footer stays readable
    (tmp_path / "torn.parquet").write_bytes(bytes(data))
    ds = ed.read_parquet(str(tmp_path / "torn.parquet"))
    with pytest.raises(Exception) as info:
        for _ in ds.iter_batches():
            pass
    assert "torn.parquet" in str(info.value) + "".join(getattr(info.value, "__notes__", []))


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ember-data-read")]


def test_leaving_a_local_read_early_stops_its_readers(ember_local: Any, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(8):
        pq.write_table(pa.table({"x": np.random.default_rng(i).random(400_000)}),
                       tmp_path / "in" / f"{i}.parquet", row_group_size=50_000)
    batches = ed.read_parquet(str(tmp_path / "in")).iter_batches(batch_size=100)
    next(batches)
    assert _readers(), "the files should be read by threads of this process"
    left = time.monotonic()
    batches.close()  # as leaving a for loop does
    eventually(lambda: not _readers(), timeout=10, what="the reader threads to end")
    assert time.monotonic() - left < 5


@pytest.mark.parametrize("shutdown", [True, False])
def test_a_program_that_leaves_a_local_read_open_still_exits(tmp_path: Path,
                                                             shutdown: bool) -> None:
    # A script that keeps an iterator (a module global) and ends: the interpreter used to join
    # the readers, blocked on a consumer that never comes back, and hung for ever.
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    for i in range(4):
        pq.write_table(pa.table({"x": np.random.default_rng(i).random(200_000)}),
                       tmp_path / "in" / f"{i}.parquet", row_group_size=10_000)
    script = tmp_path / "leave_open.py"
    script.write_text(
        "import ember, ember.data as ed\n"
        "ember.init(num_cpus=2)\n"
        f"it = iter(ed.read_parquet({str(tmp_path / 'in')!r}).iter_batches(batch_size=100))\n"
        "print(len(next(it)['x']), flush=True)\n"
        + ("ember.shutdown()\n" if shutdown else ""))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["100"]


def test_a_transform_after_a_local_read_runs_in_tasks(ember_local: Any, tmp_path: Path) -> None:
    _write_parquet(tmp_path / "in")
    ds = ed.read_parquet(str(tmp_path / "in")).map_batches(
        lambda b: {"pid": np.full(len(b["id"]), os.getpid())})
    pids = {int(p) for b in ds.iter_batches(batch_size=None) for p in b["pid"]}
    assert pids and os.getpid() not in pids


def test_a_batch_is_owned_only_when_every_block_it_comes_from_is() -> None:
    def block(start: int, rows: int) -> pa.Table:
        return pa.table({"x": np.arange(start, start + rows, dtype=np.int64)})

    batcher = _block.Batcher(4)
    out = []
    for b, owned in [(block(0, 6), True), (block(6, 5), False), (block(11, 9), True)]:
        for piece in batcher.add(b, owned):
            out.append((piece["x"].to_pylist(), batcher.owned))
    for piece in batcher.finish():
        out.append((piece["x"].to_pylist(), batcher.owned))
    assert out == [([0, 1, 2, 3], True), ([4, 5, 6, 7], False), ([8, 9, 10, 11], False),
                   ([12, 13, 14, 15], True), ([16, 17, 18, 19], True)]


def test_only_an_owned_mutable_buffer_becomes_a_writable_view_without_a_copy() -> None:
    mine = pa.table({"x": np.arange(10, dtype=np.float64)})
    view = _block.block_to_batch(mine.slice(2, 5), "numpy", owned=True)["x"]
    assert view.flags.writeable and not view.flags.owndata  # a view of the block's memory
    view[0] = -1.0
    assert mine["x"][2].as_py() == -1.0
    # not owned (a block other consumers may read): a copy, the block untouched
    copy = _block.block_to_batch(mine.slice(2, 5), "numpy")["x"]
    copy[1] = -2.0
    assert mine["x"][3].as_py() == 3.0
    # owned but immutable memory (as the object store hands out): a copy too
    frozen = pa.Array.from_buffers(pa.float64(), 4, [None, pa.py_buffer(bytes(32))])
    values = _block.column_to_numpy(frozen, owned=True)
    assert not values.flags.writeable  # block_to_batch then copies it
