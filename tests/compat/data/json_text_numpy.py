# compat: topic doc/source/data/loading-data.rst and saving-data.rst (JSON, text, NumPy files)
"""Writing and reading JSON lines and NumPy files, and reading a text file one row per line."""

import os
import tempfile

import numpy as np
import ray

ray.init(num_cpus=2)

with tempfile.TemporaryDirectory() as folder:
    records = ray.data.from_items([{"city": c, "rain_mm": r} for c, r in
                                   [("Lima", 6), ("Bergen", 2250), ("Cairo", 25)]])
    records.write_json(os.path.join(folder, "json"))
    back = ray.data.read_json(os.path.join(folder, "json"))
    assert back.count() == 3
    assert sorted(r["city"] for r in back.filter(lambda r: r["rain_mm"] > 10).take_all()) == [
        "Bergen", "Cairo"]

    text_path = os.path.join(folder, "poem.txt")
    with open(text_path, "w") as f:
        f.write("roses are red\nviolets are blue\n")
    lines = ray.data.read_text(text_path)
    assert lines.columns() == ["text"]
    assert sorted(r["text"] for r in lines.take_all()) == ["roses are red", "violets are blue"]

    matrix = ray.data.from_numpy(np.arange(12, dtype=np.int64).reshape(4, 3))
    matrix.write_numpy(os.path.join(folder, "npy"), column="data")
    loaded = ray.data.read_numpy(os.path.join(folder, "npy"))
    assert loaded.count() == 4
    rows = sorted(r["data"].tolist() for r in loaded.take_all())
    assert rows == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], rows

ray.shutdown()
print("json, text and numpy ok")
