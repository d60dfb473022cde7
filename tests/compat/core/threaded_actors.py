# compat: topic doc/source/ray-core/actors/concurrency_group_api.rst and async_api.rst (threaded actors)
"""Threaded actors: max_concurrency > 1 runs a plain actor's methods in a thread pool."""

import threading
import time

import ray

ray.init(num_cpus=2)


@ray.remote(max_concurrency=4)
class Downloader:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.threads = set()

    def fetch(self, url):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.add(threading.get_ident())
        time.sleep(0.5)  # stands for waiting on the network
        with self.lock:
            self.active -= 1
        return f"contents of {url}"

    def report(self):
        return self.peak, len(self.threads)


downloader = Downloader.remote()
ray.get(downloader.report.remote())
start = time.monotonic()
pages = ray.get([downloader.fetch.remote(f"https://example.com/{i}") for i in range(8)])
elapsed = time.monotonic() - start
assert pages[3] == "contents of https://example.com/3"
peak, threads = ray.get(downloader.report.remote())
print(f"8 fetches in {elapsed:.1f} s, at most {peak} at once, on {threads} threads")
assert peak == 4 and threads > 1
assert elapsed < 3.5, elapsed

# The default max_concurrency is 1: calls run one at a time.
serial = Downloader.options(max_concurrency=1).remote()
ray.get([serial.fetch.remote(str(i)) for i in range(3)])
assert ray.get(serial.report.remote())[0] == 1
print("threaded actors ok")
ray.shutdown()
