"""Writes: ``min_rows_per_file`` (and Ray's older ``num_rows_per_file``) join small blocks so that
each file holds at least that many rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import ember.data as ed


def rows_per_file(folder: Path) -> list[int]:
    return sorted(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet"))


def test_min_rows_per_file_joins_small_blocks(ember_local: Any, tmp_path: Path) -> None:
    ds = ed.range(100, override_num_blocks=20)  # blocks of 5 rows
    ds.write_parquet(str(tmp_path / "plain"))
    assert rows_per_file(tmp_path / "plain") == [5] * 20

    ds.write_parquet(str(tmp_path / "joined"), min_rows_per_file=30)
    counts = rows_per_file(tmp_path / "joined")
    assert sum(counts) == 100
    assert all(c >= 30 for c in counts[1:]) and len(counts) <= 4  # only the last may be short
    assert sorted(r["id"] for r in ed.read_parquet(str(tmp_path / "joined")).take_all()
                  ) == list(range(100))

    ds.write_csv(str(tmp_path / "csv"), num_rows_per_file=50)  # Ray's older name
    assert len(list((tmp_path / "csv").glob("*.csv"))) == 2


def test_min_rows_per_file_is_checked(ember_local: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_rows_per_file"):
        ed.range(3).write_json(str(tmp_path), min_rows_per_file=0)
    with pytest.raises(ValueError, match="not both"):
        ed.range(3).write_parquet(str(tmp_path), min_rows_per_file=2, num_rows_per_file=3)
