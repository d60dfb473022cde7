# compat: topic doc/source/ray-core/fault_tolerance/tasks.rst (retrying failed tasks)
"""Task retries: a task whose worker dies is retried (max_retries); an application
exception is retried only when retry_exceptions asks for it."""

import os
from pathlib import Path

import ray

ray.init(num_cpus=2)


def attempts(path):
    """Counts attempts in a file, so a retried task (a new process) sees earlier ones."""
    file = Path(path)
    count = int(file.read_text()) if file.exists() else 0
    file.write_text(str(count + 1))
    return count + 1


@ray.remote(max_retries=3)
def crashes_twice(path):
    if attempts(path) <= 2:
        os._exit(1)  # the worker process dies
    return "made it"


assert ray.get(crashes_twice.remote(os.path.abspath("crash-count"))) == "made it"
assert Path("crash-count").read_text() == "3"


@ray.remote(max_retries=1)
def always_crashes():
    os._exit(1)


try:
    ray.get(always_crashes.remote())
except ray.exceptions.WorkerCrashedError:
    print("gave up after the retries")


@ray.remote(max_retries=2, retry_exceptions=True)
def flaky(path):
    if attempts(path) < 3:
        raise ConnectionError("service unavailable")
    return "answered"


assert ray.get(flaky.remote(os.path.abspath("flaky-count"))) == "answered"


@ray.remote(max_retries=5, retry_exceptions=[ConnectionError])
def wrong_input(path):
    attempts(path)
    raise ValueError("bad input is not worth retrying")


try:
    ray.get(wrong_input.remote(os.path.abspath("value-count")))
except ValueError:
    pass
# Only ConnectionError is retried: the ValueError failed on the first attempt.
assert Path("value-count").read_text() == "1"


@ray.remote
def no_retry_by_default(path):
    attempts(path)
    raise ConnectionError("down")


try:
    ray.get(no_retry_by_default.remote(os.path.abspath("default-count")))
except ConnectionError:
    pass
assert Path("default-count").read_text() == "1"
print("task retries ok")
ray.shutdown()
