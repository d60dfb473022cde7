# compat: topic doc/source/ray-core/examples/map_reduce.ipynb
"""Word count with map and reduce tasks: each mapper splits its words into one partition
per reducer (num_returns), each reducer sums its partition from every mapper."""

from collections import Counter

import ray

ray.init(num_cpus=2)

TEXT = """the quick brown fox jumps over the lazy dog
a lazy afternoon for the brown dog and the quick cat
every dog has its day and every fox its night"""
NUM_REDUCERS = 3
documents = TEXT.splitlines()


def partition_of(word):
    # A stable hash: Python's hash() of str differs between processes.
    return sum(word.encode()) % NUM_REDUCERS


@ray.remote(num_returns=NUM_REDUCERS)
def map_words(document):
    partitions = [Counter() for _ in range(NUM_REDUCERS)]
    for word in document.split():
        partitions[partition_of(word)][word] += 1
    return tuple(partitions)


@ray.remote
def reduce_counts(*partitions):
    total = Counter()
    for partition in partitions:
        total.update(partition)
    return total


mapped = [map_words.remote(doc) for doc in documents]  # one list of refs per mapper
reduced = [reduce_counts.remote(*[refs[r] for refs in mapped]) for r in range(NUM_REDUCERS)]
counts = Counter()
for partial in ray.get(reduced):
    assert not set(partial) & set(counts), "a word reached two reducers"
    counts.update(partial)

assert counts == Counter(TEXT.split())
print("most common:", counts.most_common(3))
assert counts.most_common(1) == [("the", 4)]
ray.shutdown()
