# compat: topic doc/source/ray-more-libs/multiprocessing.rst (Distributed multiprocessing.Pool)
"""ray.util.multiprocessing.Pool as a drop-in for multiprocessing.Pool: map, imap,
imap_unordered, starmap, apply_async with callbacks, an initializer per process, errors that
come back with their own type, and a pool that refuses work once closed."""

import os
import tempfile
import time

import ray
from ray.util.multiprocessing import Pool, TimeoutError

ray.init(num_cpus=2)


def square(x):
    time.sleep(0.01)
    return x * x, os.getpid()


def note_pid(path):
    with open(path, "a") as out:
        out.write(f"{os.getpid()}\n")


def check_key(x):
    if x == 3:
        raise KeyError(x)
    return x


notes = os.path.join(tempfile.mkdtemp(), "initialized")
with Pool(processes=2, initializer=note_pid, initargs=(notes,)) as pool:
    # map: results in the order of the inputs, computed in both processes.
    results = pool.map(square, range(20))
    assert [value for value, _ in results] == [x * x for x in range(20)]
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids, pids
    # The initializer ran once in each of those processes.
    with open(notes) as f:
        assert sorted(map(int, f.read().split())) == sorted(pids)

    assert [v for v, _ in pool.imap(square, range(8))] == [x * x for x in range(8)]
    unordered = [v for v, _ in pool.imap_unordered(square, range(8), chunksize=3)]
    assert sorted(unordered) == [x * x for x in range(8)]
    assert pool.starmap(pow, [(2, 5), (3, 3)]) == [32, 27]
    assert pool.apply(max, (4, 9, 2)) == 9

    # Callbacks get the results, or the first error. (Ray 2.60 hands the callback the results
    # in the order they finished and error_callback its own wrapper of the error, so this
    # checks only what both give.)
    got, errors = [], []
    done = pool.map_async(check_key, [0, 1, 2], callback=got.append)
    assert done.get(timeout=60) == [0, 1, 2] and done.successful()
    assert len(got) == 1 and sorted(got[0]) == [0, 1, 2], got
    failed = pool.apply_async(check_key, (3,), error_callback=errors.append)
    failed.wait(timeout=60)
    assert failed.ready() and not failed.successful()
    assert len(errors) == 1, errors

    # An exception in the function comes back as that exception.
    try:
        pool.map(check_key, range(6))
    except KeyError as exc:
        print("map raised KeyError", exc)
    else:
        raise AssertionError("map should have raised KeyError")

    slow = pool.apply_async(time.sleep, (30,))
    try:
        slow.get(timeout=0.5)
    except TimeoutError:
        print("timed out as expected")
    else:
        raise AssertionError("get should have timed out")

# Leaving the with block terminated the pool: it takes no more work.
try:
    pool.map(square, [1])
except ValueError:
    print("closed pool refused work")

pool = Pool(processes=2)
pending = pool.map_async(check_key, [5, 6])
pool.close()
pool.join()
assert pending.get() == [5, 6]
print("multiprocessing pool ok")
ray.shutdown()
