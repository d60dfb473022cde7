"""Readers that need optional packages: images (Pillow) and Hugging Face datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
