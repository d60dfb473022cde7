# compat: topic doc/source/data/api/dataset.rst (split, streaming_split, train_test_split)
"""Splitting a dataset: equal splits, a train/test split, and streaming_split consumed by
actors at the same time."""

import ray

ray.init(num_cpus=2)

ds = ray.data.range(12)

parts = ds.split(3, equal=True)
assert [p.count() for p in parts] == [4, 4, 4]
assert sorted(r["id"] for p in parts for r in p.take_all()) == list(range(12))

train, test = ds.train_test_split(test_size=0.25)
assert (train.count(), test.count()) == (9, 3)
assert sorted(r["id"] for r in test.take_all()) == [9, 10, 11]


@ray.remote(num_cpus=0)
class Consumer:
    def consume(self, iterator):
        return [int(v) for batch in iterator.iter_batches(batch_size=2) for v in batch["id"]]


shards = ds.streaming_split(2, equal=True)
consumers = [Consumer.remote() for _ in shards]
seen = ray.get([c.consume.remote(s) for c, s in zip(consumers, shards, strict=True)])
assert [len(s) for s in seen] == [6, 6], seen
assert sorted(seen[0] + seen[1]) == list(range(12))

ray.shutdown()
print("split ok")
