"""Readers: images (Pillow), Hugging Face datasets, Parquet folders whose files' schemas
differ, custom ``Datasource``s, and Ray's ``override_num_blocks``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ember.data as ed


def _write_images(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")  # skipped by extension
    pixels = {}
    for i, shape in enumerate([(4, 6, 3), (8, 2, 3)]):
        array = (np.arange(np.prod(shape)).reshape(shape) * (i + 1) % 256).astype(np.uint8)
        Image.fromarray(array).save(folder / f"img{i}.png")
        pixels[f"img{i}.png"] = array
    return pixels


def test_read_images_gives_pixel_arrays_and_paths(ember_local: Any, tmp_path: Path) -> None:
    pixels = _write_images(tmp_path / "images")
    rows = ed.read_images(str(tmp_path / "images"), include_paths=True).take_all()
    assert len(rows) == 2
    for row in rows:
        name = Path(row["path"]).name
        np.testing.assert_array_equal(row["image"], pixels[name])


def test_read_images_resizes_and_converts(ember_local: Any, tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    batch = ed.read_images(str(tmp_path / "images"), size=(5, 7), mode="L").take_batch(2)
    # Same size after resizing, so the batch stacks into one (rows, height, width) array.
    assert batch["image"].shape == (2, 5, 7)
    assert batch["image"].dtype == np.uint8


def test_read_images_reports_a_broken_file(ember_local: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(Exception, match="cannot identify image file") as caught:
        ed.read_images(str(tmp_path / "bad.png")).take_all()
    assert f"raised while reading {tmp_path / 'bad.png'}" in str(caught.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_from_huggingface_keeps_columns_and_rows(ember_local: Any) -> None:
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_dict({"text": [f"line {i}" for i in range(10)],
                                     "label": list(range(10))})
    ds = ed.from_huggingface(hf, parallelism=3)
    assert ds.columns() == ["text", "label"]
    assert ds.count() == 10
    doubled = ds.map_batches(lambda b: {"label": b["label"] * 2}).take_all()
    assert sorted(r["label"] for r in doubled) == [2 * i for i in range(10)]
    # select/filter/shuffle leave an indices mapping over the original table: the rows the user
    # sees are the mapped ones.
    picked = hf.filter(lambda r: r["label"] % 3 == 0).shuffle(seed=1)
    assert sorted(r["label"] for r in ed.from_huggingface(picked).take_all()) == [0, 3, 6, 9]
    with pytest.raises(TypeError, match="pick a split"):
        ed.from_huggingface(datasets.DatasetDict({"train": hf}))


def test_parquet_files_with_compatible_schemas_read_as_one(ember_local: Any, tmp_path: Path
                                                           ) -> None:
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int32()), "b": ["x", "y"]}),
                   tmp_path / "part-1.parquet")
    pq.write_table(pa.table({"c": [0.5], "a": pa.array([3], pa.int64())}),
                   tmp_path / "part-2.parquet")
    ds = ed.read_parquet(str(tmp_path))
    assert ds.schema() == pa.schema([("a", pa.int64()), ("b", pa.string()), ("c", pa.float64())])
    frame = ds.to_pandas().sort_values("a", ignore_index=True)
    assert frame["a"].tolist() == [1, 2, 3]
    assert frame["b"].tolist()[:2] == ["x", "y"] and pd.isna(frame["b"][2])
    assert pd.isna(frame["c"][0]) and frame["c"][2] == 0.5
    assert sorted(ed.read_parquet(str(tmp_path), columns=["c", "a"]).take_all(),
                  key=lambda r: r["a"]) == [{"c": None, "a": 1}, {"c": None, "a": 2},
                                            {"c": 0.5, "a": 3}]
    with pytest.raises(ValueError, match=r"no file has the columns \['z'\]"):
        ed.read_parquet(str(tmp_path), columns=["a", "z"])


def test_parquet_files_whose_schemas_clash_are_named(ember_local: Any, tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2], "v": [1.0, 2.0]}), tmp_path / "good.parquet")
    pq.write_table(pa.table({"v": [3.0]}), tmp_path / "fine.parquet")
    pq.write_table(pa.table({"id": ["three"]}), tmp_path / "odd.parquet")
    with pytest.raises(ValueError) as failure:
        ed.read_parquet(str(tmp_path))
    message = str(failure.value)
    assert "good.parquet" in message and "odd.parquet" in message and "'id'" in message
    assert "schema=" in message
    # A schema given by the caller reads them all, cast to it (missing columns are nulls).
    forced = ed.read_parquet(str(tmp_path), schema=pa.schema([("id", pa.string())]))
    assert sorted(r["id"] or "-" for r in forced.take_all()) == ["-", "1", "2", "three"]
    with pytest.raises(ValueError, match=r"odd\.parquet"):  # a value that cannot be cast
        ed.read_parquet(str(tmp_path), schema=pa.schema([("id", pa.int64())])).take_all()


def test_read_datasource_runs_the_read_tasks_of_a_custom_source(ember_local: Any) -> None:
    from ember.data.block import BlockMetadata
    from ember.data.datasource import Datasource, ReadTask

    class Squares(Datasource):
        def __init__(self, n: int) -> None:
            self.n = n
            self.asked: list[int] = []

        def estimate_inmemory_data_size(self) -> int:
            return 8 * self.n

        def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[ReadTask]:
            self.asked.append(parallelism)
            chunks = np.array_split(np.arange(self.n), parallelism)
            tasks = []
            for i, chunk in enumerate(chunks):
                def read(chunk: np.ndarray = chunk, i: int = i) -> list[Any]:
                    if i % 2:  # Ray's read tasks may return pandas as well as Arrow
                        return [pd.DataFrame({"x": chunk ** 2})]
                    return [pa.table({"x": chunk ** 2})]

                tasks.append(ReadTask(read, BlockMetadata(num_rows=len(chunk),
                                                          size_bytes=8 * len(chunk))))
            return tasks

    source = Squares(10)
    ds = ed.read_datasource(source, override_num_blocks=3)
    assert source.asked == [3]
    assert sorted(r["x"] for r in ds.take_all()) == [i * i for i in range(10)]
    assert ds.num_blocks() == 3
    assert ed.read_datasource(Squares(6), concurrency=1).count() == 6
    with pytest.raises(TypeError, match="Datasource"):
        ed.read_datasource(object())  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="get_read_tasks"):
        ed.read_datasource(Datasource(), override_num_blocks=2)


def test_override_num_blocks_sets_the_number_of_blocks(ember_local: Any) -> None:
    assert ed.from_items(list(range(10)), override_num_blocks=5).num_blocks() == 5
    assert ed.range(100, override_num_blocks=4).materialize().num_blocks() == 4
    with pytest.raises(ValueError, match="override_num_blocks"):
        ed.range(10, override_num_blocks=0)
    with pytest.raises(ValueError, match="disagree"):
        ed.range(10, parallelism=2, override_num_blocks=3)


def test_from_refs_build_datasets_from_objects_in_the_store(ember_local: Any) -> None:
    import ember

    tables = [ember.put(pa.table({"a": [1, 2]})), ember.put(pa.table({"a": [3]}))]
    assert sorted(r["a"] for r in ed.from_arrow_refs(tables).take_all()) == [1, 2, 3]
    assert ed.from_arrow_refs(tables).num_blocks() == 2
    frame = ember.put(pd.DataFrame({"b": ["x", "y"]}))
    assert ed.from_pandas_refs(frame).take_all() == [{"b": "x"}, {"b": "y"}]
    arrays = ember.put(np.arange(6).reshape(3, 2))
    assert ed.from_numpy_refs([arrays]).take_batch(3)["data"].tolist() == [[0, 1], [2, 3],
                                                                              [4, 5]]
    with pytest.raises(TypeError, match="ObjectRefs"):
        ed.from_arrow_refs([pa.table({"a": [1]})])
