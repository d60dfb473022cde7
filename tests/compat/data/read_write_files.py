# compat: topic doc/source/data/loading-data.rst and saving-data.rst (CSV and Parquet)
"""Reading CSV and Parquet files, writing a transformed dataset to Parquet and CSV folders,
and reading what was written."""

import os
import tempfile

import ray

ray.init(num_cpus=2)

iris = ray.data.read_csv("iris.csv")
assert iris.count() == 150
assert iris.schema().names == ["sepal.length", "sepal.width", "petal.length", "petal.width",
                               "variety"]

same = ray.data.read_parquet("iris.parquet")
assert same.count() == 150
assert sorted(r["variety"] for r in same.take_all()) == sorted(
    r["variety"] for r in iris.take_all())

setosa = iris.filter(lambda row: row["variety"] == "Setosa").select_columns(
    ["sepal.length", "petal.length"])

with tempfile.TemporaryDirectory() as folder:
    parquet_dir = os.path.join(folder, "parquet")
    setosa.write_parquet(parquet_dir)
    assert any(name.endswith(".parquet") for name in os.listdir(parquet_dir))
    back = ray.data.read_parquet(parquet_dir)
    assert back.count() == 50
    assert back.columns() == ["sepal.length", "petal.length"]

    csv_dir = os.path.join(folder, "csv")
    setosa.write_csv(csv_dir)
    again = ray.data.read_csv(csv_dir)
    assert again.count() == 50
    assert abs(again.sum("sepal.length") - setosa.sum("sepal.length")) < 1e-9

ray.shutdown()
print("read and write ok")
