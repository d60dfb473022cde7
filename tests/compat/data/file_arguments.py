# compat: topic doc/source/data/loading-data.rst and saving-data.rst (format arguments, compressed files, partitions)
"""Format arguments that reads and writes hand on to pyarrow (a tab-separated file read with
``parse_options``, Parquet written with gzip pages), a gzipped JSON lines file, and a Parquet
folder written in hive partitions with ``partition_cols`` and read back with the partition
column, whole and through a ``partition_filter``."""

import glob
import gzip
import os
import tempfile

import pyarrow.csv
import pyarrow.parquet as pq
import ray
from ray.data.datasource import PathPartitionFilter

ray.init(num_cpus=2)

with tempfile.TemporaryDirectory() as folder:
    tsv = os.path.join(folder, "cities.tsv")
    with open(tsv, "w") as f:
        f.write("city\tcountry\tpeople\nLima\tPeru\t10\nOslo\tNorway\t1\nCairo\tEgypt\t22\n")
    cities = ray.data.read_csv(tsv, parse_options=pyarrow.csv.ParseOptions(delimiter="\t"))
    assert cities.columns() == ["city", "country", "people"], cities.columns()
    assert sorted(r["people"] for r in cities.take_all()) == [1, 10, 22]

    events = os.path.join(folder, "events.jsonl.gz")
    with gzip.open(events, "wt") as f:
        f.write('{"kind": "click", "ms": 12}\n{"kind": "view", "ms": 40}\n')
    clicks = ray.data.read_json(events).filter(lambda r: r["kind"] == "click")
    assert clicks.take_all() == [{"kind": "click", "ms": 12}]

    rain = ray.data.from_items([{"year": y, "month": m, "mm": y - 2000 + m}
                                for y in (2022, 2023) for m in (1, 2, 3)])
    rain.write_parquet(os.path.join(folder, "rain"), partition_cols=["year"])
    assert sorted(os.listdir(os.path.join(folder, "rain"))) == ["year=2022", "year=2023"]
    back = ray.data.read_parquet(os.path.join(folder, "rain"))
    rows = sorted(back.take_all(), key=lambda r: (r["year"], r["month"]))
    assert rows[0] == {"month": 1, "mm": 23, "year": "2022"}, rows[0]
    assert len(rows) == 6
    only_2023 = ray.data.read_parquet(
        os.path.join(folder, "rain"),
        partition_filter=PathPartitionFilter.of(lambda d: d["year"] == "2023"))
    assert sorted(r["mm"] for r in only_2023.take_all()) == [24, 25, 26]

    cities.write_parquet(os.path.join(folder, "gz"), compression="gzip")
    for path in glob.glob(os.path.join(folder, "gz", "*.parquet")):
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "GZIP"
    assert ray.data.read_parquet(os.path.join(folder, "gz")).count() == 3

ray.shutdown()
print("file arguments ok")
