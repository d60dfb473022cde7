"""A tour of ember's core API on the local (embedded) backend, in a few seconds.

Run it from the repository root (``make demo`` does this)::

    .venv/bin/python examples/core_tour.py [--quick]

``--quick`` (what CI runs) shares a 32 MB array in section 3 instead of 256 MB; the rest is the
same. It prints one short section per feature, each with how long it took:

 1. start-up: ``ember.init()`` starts the runtime in a fraction of a second, no daemon needed;
 2. tasks: ``@ember.remote`` functions run in parallel worker processes;
 3. ``ember.put``: one numpy array stored once in shared memory, read by several tasks without
    copies;
 4. an actor: a class instance with state living in its own process;
 5. a streaming generator: items reach the caller while the task is still producing them;
 6. errors: a ``ValueError`` raised in a task is caught with ``except ValueError``;
 7. ``ember.wait``: take results in the order they finish;
 8. nested tasks: tasks that submit tasks and wait for them, three levels deep;

then the total time.
"""

from __future__ import annotations

import argparse
import mmap
import time
from collections.abc import Iterator

import numpy as np

import ember


def section(number: int, title: str) -> float:
    print(f"\n{number}. {title}")
    return time.perf_counter()


def took(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1e3:.0f} ms"


# -- remote functions and classes: defined at module level, like any function or class -------

@ember.remote
def square(x: int) -> int:
    return x * x


@ember.remote
def slow_square(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


def in_shared_memory(array: np.ndarray) -> bool:
    """Whether the array is a view on a mapped shared-memory segment rather than a private copy."""
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


@ember.remote
def column_stats(matrix: np.ndarray, column: int) -> tuple[float, bool]:
    """The mean of one column, and whether this task reads `matrix` in place (zero-copy)."""
    return float(matrix[:, column].mean()), in_shared_memory(matrix)


@ember.remote
class Accumulator:
    """Keeps a running total and count; calls run one at a time, in the order they were made."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> float:
        self.total += value
        self.count += 1
        return self.total

    def mean(self) -> float:
        return self.total / self.count


@ember.remote
def countdown(n: int, pause: float) -> Iterator[int]:  # a generator: items stream back one by one
    for i in range(n, 0, -1):
        time.sleep(pause)
        yield i


@ember.remote
def parse_positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {value}")
    return value


@ember.remote
def sum_of_squares(lo: int, hi: int) -> int:
    """A task that fans out to `square` tasks and waits for them."""
    return sum(ember.get([square.remote(i) for i in range(lo, hi)]))


@ember.remote
def total_of_squares(n: int, chunk: int) -> int:
    """A task that fans out to `sum_of_squares` tasks: three levels of tasks in all."""
    return sum(ember.get([sum_of_squares.remote(lo, min(lo + chunk, n))
                          for lo in range(0, n, chunk)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller shared array (for CI)")
    args = parser.parse_args()
    rows = 512 if args.quick else 4096
    tour_start = time.perf_counter()

    start = section(1, "start-up")
    with ember.init():
        first = ember.get(square.remote(7))
        print(f"   ember.init() and a first task (square(7) = {first}): {took(start)}; "
              f"resources: {ember.cluster_resources()}")

        start = section(2, "tasks")
        refs = [square.remote(i) for i in range(1000)]  # returns at once: one ObjectRef each
        squares = ember.get(refs)
        print(f"   1000 tasks, sum of squares 0..999 = {sum(squares)}: {took(start)}")

        start = section(3, "ember.put: one array, many readers")
        matrix = np.random.default_rng(0).standard_normal((rows, 8192))  # 256 MB of float64 (--quick: 32)
        start = time.perf_counter()
        matrix_ref = ember.put(matrix)  # stored once; passing the ref to tasks copies nothing
        print(f"   put {matrix.nbytes >> 20} MB: {took(start)}")
        start = time.perf_counter()
        stats = ember.get([column_stats.remote(matrix_ref, c) for c in range(8)])
        means = [round(mean, 3) for mean, _ in stats]
        zero_copy = all(shared for _, shared in stats)
        print(f"   8 tasks read it (zero-copy: {zero_copy}), column means {means}: {took(start)}")
        del matrix_ref

        start = section(4, "an actor with state")
        acc = Accumulator.remote()  # starts a process that holds the instance
        totals = ember.get([acc.add.remote(t) for t in (21.5, 23.0, 19.5, 22.0)])
        print(f"   running totals {totals}, mean {ember.get(acc.mean.remote()):.2f}: "
              f"{took(start)}")
        start = time.perf_counter()
        for _ in range(1000):
            ember.get(acc.add.remote(1.0))
        per_call = (time.perf_counter() - start) * 1e3
        print(f"   1000 calls, one at a time: {per_call:.0f} ms ({per_call:.0f} µs per call)")

        start = section(5, "a streaming generator")
        for ref in countdown.remote(5, 0.1):
            print(f"   got {ember.get(ref)} after {took(start)}")

        start = section(6, "errors")
        try:
            ember.get(parse_positive.remote("-3"))
        except ValueError as exc:  # the remote ValueError, with its remote traceback attached
            first_line = str(exc).splitlines()[0]
            print(f"   caught ValueError (also an ember.errors.TaskError: "
                  f"{isinstance(exc, ember.errors.TaskError)}): {first_line}")
        print(f"   {took(start)}")

        start = section(7, "ember.wait: results as they finish")
        pending = [slow_square.remote(x, seconds) for x, seconds in ((1, 0.5), (2, 0.1), (3, 0.3))]
        while pending:
            ready, pending = ember.wait(pending, num_returns=1)
            print(f"   {ember.get(ready[0])} ready after {took(start)}")

        start = section(8, "nested tasks")
        # Four tasks each wait on four tasks that each wait on eight: 148 tasks on however many
        # CPUs there are. A task blocked in ember.get lends its CPU to the tasks it waits for.
        totals = ember.get([total_of_squares.remote(32, 8) for _ in range(4)])
        print(f"   4 x sum of squares 0..31 = {totals} from 148 tasks, 144 of them "
              f"started by tasks: {took(start)}")

    print(f"\ntour finished in {time.perf_counter() - tour_start:.1f} s")


if __name__ == "__main__":
    main()
