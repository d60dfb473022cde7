"""Ray's file arguments of ``read_*`` and ``write_*``: format arguments passed on to pyarrow,
numpy and pandas, compressed files, which files are read, and partitions in folder names
(``ember/data/__init__.py``, ``_read.py``, ``_write.py``, ``datasource.py``)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

import ember.data as ed
from ember.data.datasource import Partitioning, PathPartitionFilter


@pytest.fixture(params=["here", "tasks"])
def rows_of(request: pytest.FixtureRequest) -> Callable[[ed.Dataset], list[dict[str, Any]]]:
    """A dataset's rows, read in this process (reads of local files run here) or by tasks
    (the reader and its options travel to a worker)."""

    def rows(ds: ed.Dataset) -> list[dict[str, Any]]:
        if request.param == "tasks":
            ds = ds.map_batches(lambda batch: batch)
        return sorted(ds.take_all(), key=lambda row: json.dumps(row, sort_keys=True,
                                                                default=str))

    return rows


# -- format arguments ---------------------------------------------------------------------------
def test_read_csv_passes_parse_read_and_convert_options_to_pyarrow(
        ember_local: Any, tmp_path: Path, rows_of: Any) -> None:
    (tmp_path / "a.tsv").write_text("name\tage\nada\t36\nbob\t41\n")
    (tmp_path / "b.csv").write_text("007;x\n")

    tsv = ed.read_csv(str(tmp_path / "a.tsv"), parse_options=pacsv.ParseOptions(delimiter="\t"))
    headerless = ed.read_csv(
        str(tmp_path / "b.csv"), parse_options=pacsv.ParseOptions(delimiter=";"),
        read_options=pacsv.ReadOptions(column_names=["code", "tag"]),
        convert_options=pacsv.ConvertOptions(column_types={"code": pa.string()}))

    assert rows_of(tsv) == [{"name": "ada", "age": 36}, {"name": "bob", "age": 41}]
    assert rows_of(headerless) == [{"code": "007", "tag": "x"}]


def test_read_json_passes_its_options_to_pyarrow(ember_local: Any, tmp_path: Path,
                                                 rows_of: Any) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": 1, "score": 2}\n{"id": 2, "score": 3}\n')
    schema = pa.schema([("id", pa.int16()), ("score", pa.float32())])

    ds = ed.read_json(str(tmp_path), parse_options=pajson.ParseOptions(explicit_schema=schema),
                      read_options=pajson.ReadOptions(block_size=1 << 20))

    assert rows_of(ds) == [{"id": 1, "score": 2.0}, {"id": 2, "score": 3.0}]
    assert ds.schema().types == [pa.int16(), pa.float32()]


def test_misspelt_or_mistyped_read_arguments_fail_at_once_naming_the_accepted_ones(
        tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    with pytest.raises(TypeError, match=r"'parse_option'.*convert_options, parse_options, "
                                        r"read_options"):
        ed.read_csv(str(tmp_path), parse_option=pacsv.ParseOptions(delimiter="\t"))
    with pytest.raises(TypeError, match=r"parse_options=.* must be a pyarrow\.csv\.ParseOptions"):
        ed.read_csv(str(tmp_path), parse_options={"delimiter": "\t"})
    with pytest.raises(TypeError, match=r"'delimiter'.*parse_options, read_options"):
        ed.read_json(str(tmp_path), delimiter="\t")
    with pytest.raises(TypeError, match=r"'dataset_kwargs'.*tensor_column_schema"):
        ed.read_parquet(str(tmp_path), dataset_kwargs={})
    with pytest.raises(TypeError, match=r"'mmap'.*mmap_mode"):
        ed.read_numpy(str(tmp_path), mmap="r")
    with pytest.raises(TypeError, match=r"arrow_open_stream_args 'codec'.*compression"):
        ed.read_text(str(tmp_path), arrow_open_stream_args={"codec": "gzip"})
    with pytest.raises(ValueError, match="compression='zip' is not a codec"):
        ed.read_text(str(tmp_path), arrow_open_stream_args={"compression": "zip"})


def test_read_parquet_takes_rays_scan_hints_and_tensor_column_schema(
        ember_local: Any, tmp_path: Path, rows_of: Any) -> None:
    arrays = [np.full((2, 3), i, dtype=np.float32) for i in range(3)]
    pq.write_table(pa.table({"id": list(range(3)), "t": [a.tobytes() for a in arrays]}),
                   tmp_path / "a.parquet")

    ds = ed.read_parquet(str(tmp_path), tensor_column_schema={"t": (np.float32, (2, 3))},
                         batch_size=2, use_threads=False, meta_provider=None)

    rows = rows_of(ds)
    assert [r["id"] for r in rows] == [0, 1, 2]
    for row, expected in zip(rows, arrays, strict=True):
        np.testing.assert_array_equal(row["t"], expected)
        assert row["t"].dtype == np.float32


def test_read_numpy_passes_load_args_and_refuses_pickles_unless_allowed(
        ember_local: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(6).reshape(3, 2))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)

    mapped = ed.read_numpy(str(tmp_path / "a.npy"), mmap_mode="r")
    assert sorted(r["data"].tolist() for r in mapped.take_all()) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="allow_pickle"):
        ed.read_numpy(str(tmp_path / "objects.npy")).take_all()
    trusted = ed.read_numpy(str(tmp_path / "objects.npy"), allow_pickle=True)
    assert [r["data"] for r in trusted.take_all()] == [{"a": 1}]


def test_write_parquet_passes_arrow_parquet_args_and_the_args_fn_to_pyarrow(
        ember_local: Any, tmp_path: Path) -> None:
    ds = ed.range(100, override_num_blocks=1)

    ds.write_parquet(str(tmp_path / "gz"), compression="gzip", row_group_size=10)
    ds.write_parquet(str(tmp_path / "fn"), compression="gzip",
                     arrow_parquet_args_fn=lambda: {"compression": "zstd"})

    [gz] = (tmp_path / "gz").iterdir()
    meta = pq.ParquetFile(gz).metadata
    assert (meta.num_row_groups, meta.row_group(0).column(0).compression) == (10, "GZIP")
    [zstd] = (tmp_path / "fn").iterdir()  # the function's arguments win, as in Ray
    assert pq.ParquetFile(zstd).metadata.row_group(0).column(0).compression == "ZSTD"
    assert sorted(r["id"] for r in ed.read_parquet(str(tmp_path / "gz")).take_all()) == list(
        range(100))


def test_write_csv_and_write_json_pass_their_args(ember_local: Any, tmp_path: Path) -> None:
    ds = ed.from_items([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], override_num_blocks=1)

    ds.write_csv(str(tmp_path / "csv"), write_options=pacsv.WriteOptions(delimiter="\t"))
    ds.write_csv(str(tmp_path / "csv_fn"), arrow_csv_args_fn=lambda: {
        "write_options": pacsv.WriteOptions(include_header=False)})
    ds.write_json(str(tmp_path / "json"), lines=False)
    ds.write_json(str(tmp_path / "json_fn"), pandas_json_args_fn=lambda: {"orient": "columns",
                                                                           "lines": False})

    [csv] = (tmp_path / "csv").iterdir()
    assert csv.read_text() == '"a"\t"b"\n1\t"x"\n2\t"y"\n'
    [csv_fn] = (tmp_path / "csv_fn").iterdir()
    assert csv_fn.read_text() == '1,"x"\n2,"y"\n'
    [records] = (tmp_path / "json").iterdir()
    assert json.loads(records.read_text()) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    [columns] = (tmp_path / "json_fn").iterdir()
    assert json.loads(columns.read_text()) == {"a": {"0": 1, "1": 2}, "b": {"0": "x", "1": "y"}}


def test_bad_write_arguments_fail_before_any_task_runs(ember_local: Any, tmp_path: Path
                                                       ) -> None:
    def never(row: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a task ran")

    ds = ed.range(10).map(never)
    with pytest.raises(TypeError, match=r"'compresion'.*compression.*row_group_size"):
        ds.write_parquet(str(tmp_path / "p"), compresion="gzip")
    with pytest.raises(TypeError, match=r"'delimiter'.*write_options"):
        ds.write_csv(str(tmp_path / "c"), delimiter="\t")
    with pytest.raises(TypeError, match=r"'line'.*lines.*orient"):
        ds.write_json(str(tmp_path / "j"), line=True)
    with pytest.raises(ValueError, match="compresses its own pages"):
        ds.write_parquet(str(tmp_path / "p"), arrow_open_stream_args={"compression": "gzip"})
    assert not list(tmp_path.iterdir())


def test_a_value_pyarrow_refuses_reaches_the_user_with_the_file_named(
        ember_local: Any, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"(?s)Unsupported compression: nope.*while writing "
                                        f"{tmp_path}/out/"):
        ed.range(3).write_parquet(str(tmp_path / "out"), compression="nope")
    with pytest.raises(TypeError, match=r"'bad'.*orient"):
        ed.range(3).write_json(str(tmp_path / "j"), pandas_json_args_fn=lambda: {"bad": 1})


# -- compressed files ---------------------------------------------------------------------------
def test_compressed_files_are_read_as_their_extension_or_open_stream_args_say(
        ember_local: Any, tmp_path: Path, rows_of: Any) -> None:
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"x,y\n1,a\n2,b\n"))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"x": 3}\n{"x": 4}\n'))
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"hello\nworld\n"))
    (tmp_path / "d.data").write_bytes(gzip.compress(b"x,y\n5,c\n"))

    assert rows_of(ed.read_csv(str(tmp_path / "a.csv.gz"))) == [{"x": 1, "y": "a"},
                                                                {"x": 2, "y": "b"}]
    assert rows_of(ed.read_json(str(tmp_path))) == [{"x": 3}, {"x": 4}]  # found as .jsonl.gz
    assert rows_of(ed.read_text(str(tmp_path / "c.txt.gz"))) == [{"text": "hello"},
                                                                 {"text": "world"}]
    gzipped = ed.read_csv(str(tmp_path / "d.data"),
                          arrow_open_stream_args={"compression": "gzip"})
    assert rows_of(gzipped) == [{"x": 5, "y": "c"}]


def test_writes_compress_with_open_stream_args_and_reads_get_the_rows_back(
        ember_local: Any, tmp_path: Path) -> None:
    ds = ed.from_items([{"x": i} for i in range(5)], override_num_blocks=1)
    ds.write_numpy(str(tmp_path / "npy"), column="x", arrow_open_stream_args={
        "compression": "gzip"})
    [npy] = (tmp_path / "npy").iterdir()
    assert npy.name.endswith(".npy.gz")
    assert sorted(r["data"] for r in ed.read_numpy(str(tmp_path / "npy")).take_all()) == list(
        range(5))
    for fmt in ("csv", "json"):
        getattr(ds, f"write_{fmt}")(str(tmp_path / fmt),
                                    arrow_open_stream_args={"compression": "gzip"})
        [path] = (tmp_path / fmt).iterdir()
        assert path.name.endswith(f".{fmt}.gz")
        assert gzip.decompress(path.read_bytes())  # really gzip
        back = getattr(ed, f"read_{fmt}")(str(tmp_path / fmt))
        assert sorted(r["x"] for r in back.take_all()) == list(range(5))


# -- which files are read -----------------------------------------------------------------------
def test_read_csv_takes_every_file_of_a_folder_unless_file_extensions_says(
        ember_local: Any, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.tsv").write_text("x\n2\n")
    (tmp_path / ".hidden.csv").write_text("x\n3\n")

    assert sorted(r["x"] for r in ed.read_csv(str(tmp_path)).take_all()) == [1, 2]
    only_csv = ed.read_csv(str(tmp_path), file_extensions=["csv"])
    assert [r["x"] for r in only_csv.take_all()] == [1]
    with pytest.raises(FileNotFoundError, match=r"no files ending in \.parquet"):
        ed.read_csv(str(tmp_path), file_extensions=["parquet"])


def test_missing_paths_are_skipped_with_ignore_missing_paths(ember_local: Any,
                                                             tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    paths = [str(tmp_path / "a.csv"), str(tmp_path / "gone.csv")]

    assert ed.read_csv(paths, ignore_missing_paths=True).take_all() == [{"x": 1}]
    with pytest.raises(FileNotFoundError, match=r"gone\.csv.*ignore_missing_paths=True"):
        ed.read_csv(paths)


def test_include_paths_on_parquet_and_numpy(ember_local: Any, tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    np.save(tmp_path / "b.npy", np.array([7]))

    assert ed.read_parquet(str(tmp_path / "a.parquet"), include_paths=True).take_all() == [
        {"x": 1, "path": str(tmp_path / "a.parquet")}]
    assert ed.read_numpy(str(tmp_path / "b.npy"), include_paths=True).take_all() == [
        {"data": 7, "path": str(tmp_path / "b.npy")}]


# -- partitions ---------------------------------------------------------------------------------
def _hive_parquet(root: Path) -> None:
    for year, values in (("2020", [1, 2]), ("2021", [3])):
        os.makedirs(root / f"year={year}")
        pq.write_table(pa.table({"v": values}), root / f"year={year}" / "part.parquet")


def test_read_parquet_of_a_hive_folder_keeps_the_partition_column(
        ember_local: Any, tmp_path: Path, rows_of: Any) -> None:
    _hive_parquet(tmp_path)

    assert rows_of(ed.read_parquet(str(tmp_path))) == [
        {"v": 1, "year": "2020"}, {"v": 2, "year": "2020"}, {"v": 3, "year": "2021"}]
    assert rows_of(ed.read_parquet(str(tmp_path), columns=["v"])) == [{"v": 1}, {"v": 2},
                                                                       {"v": 3}]
    assert rows_of(ed.read_parquet(str(tmp_path), columns=["year"])) == [
        {"year": "2020"}, {"year": "2020"}, {"year": "2021"}]
    assert rows_of(ed.read_parquet(str(tmp_path), partitioning=None)) == [{"v": 1}, {"v": 2},
                                                                           {"v": 3}]
    typed = ed.read_parquet(str(tmp_path), partitioning=Partitioning(
        "hive", field_types={"year": int}))
    assert [r["year"] for r in rows_of(typed)] == [2020, 2020, 2021]


def test_read_parquet_filter_may_name_partition_columns(ember_local: Any, tmp_path: Path,
                                                        rows_of: Any) -> None:
    import pyarrow.dataset as pads

    _hive_parquet(tmp_path)
    year = pads.field("year")
    assert rows_of(ed.read_parquet(str(tmp_path), filter=year == "2021")) == [
        {"v": 3, "year": "2021"}]
    both = (year == "2020") & (pads.field("v") > 1)
    assert rows_of(ed.read_parquet(str(tmp_path), filter=both)) == [{"v": 2, "year": "2020"}]
    # read in this process (iter_batches), by tasks, and projected away from the filter's
    iterated = [int(v) for b in ed.read_parquet(str(tmp_path), filter=year >= "2020")
                .iter_batches() for v in b["v"]]
    assert sorted(iterated) == [1, 2, 3]
    assert rows_of(ed.read_parquet(str(tmp_path), columns=["v"], filter=year != "2020")
                   .map_batches(lambda b: b)) == [{"v": 3}]
    typed = ed.read_parquet(str(tmp_path), filter=pads.field("year") == 2020,
                            partitioning=Partitioning("hive", field_types={"year": int}))
    assert rows_of(typed) == [{"v": 1, "year": 2020}, {"v": 2, "year": 2020}]


def test_dir_partitioning_names_the_folders_and_a_files_own_column_is_checked(
        ember_local: Any, tmp_path: Path) -> None:
    for label, body in (("cat", "label,n\ncat,1\n"), ("dog", "label,n\ndog,2\n")):
        os.makedirs(tmp_path / label)
        (tmp_path / label / "a.csv").write_text(body)
    dirs = Partitioning("dir", base_dir=str(tmp_path), field_names=["label"])

    rows = ed.read_csv(str(tmp_path), partitioning=dirs).take_all()
    assert sorted(rows, key=lambda r: r["n"]) == [{"label": "cat", "n": 1},
                                                  {"label": "dog", "n": 2}]
    (tmp_path / "dog" / "a.csv").write_text("label,n\ncat,3\n")  # the file disagrees
    with pytest.raises(ValueError, match=r"column 'label' holds \['cat'\], not its partition "
                                         r"value 'dog'"):
        ed.read_csv(str(tmp_path), partitioning=dirs).take_all()
    with pytest.raises(ValueError, match="field_names"):
        Partitioning("dir")
    with pytest.raises(ValueError, match="the styles are 'hive', 'dir'"):
        Partitioning("dirs")


def test_partition_filter_drops_files_before_any_is_read(ember_local: Any, tmp_path: Path
                                                         ) -> None:
    _hive_parquet(tmp_path)
    os.makedirs(tmp_path / "year=2019")
    (tmp_path / "year=2019" / "part.parquet").write_bytes(b"not parquet")  # never opened
    seen: list[dict[str, str]] = []

    def recent(values: dict[str, str]) -> bool:
        seen.append(values)
        return values["year"] >= "2021"

    ds = ed.read_parquet(str(tmp_path), partition_filter=PathPartitionFilter.of(recent))

    assert ds.take_all() == [{"v": 3, "year": "2021"}]
    assert {"year": "2019"} in seen
    with pytest.raises(FileNotFoundError, match="that partition_filter keeps"):
        ed.read_parquet(str(tmp_path), partition_filter=PathPartitionFilter.of(lambda d: False))


def test_write_parquet_partition_cols_round_trips_through_hive_folders(
        ember_local: Any, tmp_path: Path) -> None:
    ds = ed.from_items([{"city": c, "year": y, "n": i} for i, (c, y) in enumerate(
        [("Lima", 2020), ("Oslo", 2020), ("Lima", 2021), ("São Paulo", 2021)])])

    ds.write_parquet(str(tmp_path), partition_cols=["year", "city"])

    folders = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet"))
    assert set(folders) == {"year=2020/city=Lima", "year=2020/city=Oslo",
                            "year=2021/city=Lima", "year=2021/city=S%C3%A3o%20Paulo"}
    assert all(pq.read_schema(p).names == ["n"] for p in tmp_path.rglob("*.parquet"))
    back = sorted(ed.read_parquet(str(tmp_path)).take_all(), key=lambda r: r["n"])
    assert back == [{"n": 0, "year": "2020", "city": "Lima"},
                    {"n": 1, "year": "2020", "city": "Oslo"},
                    {"n": 2, "year": "2021", "city": "Lima"},
                    {"n": 3, "year": "2021", "city": "São Paulo"}]
    with pytest.raises(KeyError, match=r"no columns \['month'\]"):
        ds.write_parquet(str(tmp_path / "bad"), partition_cols=["month"])


def test_partitioned_and_compressed_files_through_s3(s3_bucket: str, ember_local: Any) -> None:
    ds = ed.from_items([{"year": 2020 + i % 2, "x": i} for i in range(6)])
    ds.write_parquet(f"{s3_bucket}/parquet", partition_cols=["year"])
    ds.write_json(f"{s3_bucket}/json", arrow_open_stream_args={"compression": "gzip"})

    parquet = ed.read_parquet(f"{s3_bucket}/parquet",
                              partition_filter=PathPartitionFilter.of(
                                  lambda d: d["year"] == "2021"))
    assert sorted(parquet.take_all(), key=lambda r: r["x"]) == [
        {"x": x, "year": "2021"} for x in (1, 3, 5)]
    assert sorted(r["x"] for r in ed.read_json(f"{s3_bucket}/json").take_all()) == list(
        range(6))
