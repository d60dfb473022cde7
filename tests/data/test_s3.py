"""Reads and writes through ``s3://`` URLs (fsspec/s3fs against moto's S3 server)."""

from __future__ import annotations

from typing import Any

import pytest

import ember.data as ed


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_round_trip_through_s3(s3_bucket: str, ember_local: Any, fmt: str) -> None:
    url = f"{s3_bucket}/out/{fmt}"
    ds = ed.range(50, parallelism=3).map(lambda r: {"id": r["id"], "name": f"n{r['id']}"})
    getattr(ds, f"write_{fmt}")(url)

    back = getattr(ed, f"read_{fmt}")(url)

    rows = sorted(back.take_all(), key=lambda r: r["id"])
    assert rows == [{"id": i, "name": f"n{i}"} for i in range(50)]
    assert back.stats().operators[0].tasks == 3  # one file per written block


def test_reading_a_missing_s3_path_names_it(s3_bucket: str, ember_local: Any) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        ed.read_parquet(f"{s3_bucket}/nothing-here")
