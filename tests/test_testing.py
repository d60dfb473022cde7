"""ember.testing, the kit users import to test their own ember programs: ``eventually``,
``FakeClock``, ``LeakCheck`` and ``ServeTestClient``."""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import ember
from ember import serve
from ember.core._settings import SHM_DIR
from ember.serve._autoscaling import AutoscalingConfig, AutoscalingPolicy
from ember.testing import FakeClock, LeakCheck, ServeTestClient, eventually


# -- eventually ----------------------------------------------------------------------------------
def test_eventually_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)

    assert eventually(lambda: max(0, next(calls) - 3), interval=0) == 1  # the 4th call


def test_eventually_retries_failed_assertions_and_reports_the_last_one() -> None:
    tries = []

    def condition() -> bool:
        tries.append(1)
        assert len(tries) > 100, f"only {len(tries)} replicas"
        return True

    with pytest.raises(AssertionError) as failure:
        eventually(condition, timeout=0.2, interval=0.01, what="the replicas to start")
    message = str(failure.value)
    assert message.startswith("gave up after 0.2 s waiting for the replicas to start")
    assert f"only {len(tries)} replicas" in message  # the last try's own message
    assert len(tries) > 2


def test_eventually_names_the_condition_when_no_what_is_given() -> None:
    def cache_is_warm() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"waiting for cache_is_warm$"):
        eventually(cache_is_warm, timeout=0.05)


def test_eventually_lets_other_errors_through_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(KeyError):
        eventually(lambda: {}["missing"], timeout=30)
    assert time.monotonic() - started < 10  # not retried until the timeout


def test_eventually_refuses_a_negative_timeout() -> None:
    with pytest.raises(ValueError, match="timeout=-1"):
        eventually(lambda: True, timeout=-1)


# -- FakeClock -----------------------------------------------------------------------------------
def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock() == clock.now == clock.monotonic() == clock.time() == 100.0
    time.sleep(0.01)
    assert clock() == 100.0
    assert clock.advance(2.5) == 102.5
    clock.sleep(0.5)
    assert clock() == 103.0
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    assert clock() == 103.0


def test_fake_clock_drives_a_policy_without_sleeping() -> None:
    """serve's autoscaling policy scales up only after the wish held for upscale_delay_s."""
    clock = FakeClock()
    policy = AutoscalingPolicy(AutoscalingConfig(min_replicas=1, max_replicas=4,
                                                 target_ongoing_requests=1,
                                                 upscale_delay_s=30))
    assert policy.decide(current=1, total_ongoing=4, now=clock()) == 1
    clock.advance(29)
    assert policy.decide(current=1, total_ongoing=4, now=clock()) == 1
    clock.advance(1)
    assert policy.decide(current=1, total_ongoing=4, now=clock()) == 4


# -- LeakCheck -----------------------------------------------------------------------------------
def test_leak_check_passes_a_runtime_that_was_shut_down(tmp_path: Path) -> None:
    with LeakCheck(temp_dir=tmp_path):
        ember.init(num_cpus=1)
        assert ember.get(ember.put(b"x" * (1 << 20))) == b"x" * (1 << 20)  # a segment
        ember.shutdown()


def test_leak_check_shuts_down_a_runtime_still_running(tmp_path: Path) -> None:
    check = LeakCheck(temp_dir=tmp_path)
    ember.init(num_cpus=1)
    workers = ember.get([ember.remote(lambda: os.getpid()).remote() for _ in range(2)])

    check.check()

    assert not ember.is_initialized()
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"]


def test_leak_check_names_a_process_left_running(tmp_path: Path) -> None:
    check = LeakCheck(timeout=0.2, temp_dir=tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(AssertionError, match=rf"processes still running: {child.pid} "):
            check.check()
    finally:
        child.kill()
        child.wait()
    check.check()  # once it is gone, nothing is left


def test_leak_check_names_a_segment_of_a_finished_session(tmp_path: Path) -> None:
    check = LeakCheck(temp_dir=tmp_path)
    segment = Path(SHM_DIR) / f"ember-{os.urandom(4).hex()}-{os.getpid()}-0"
    segment.write_bytes(b"left behind")
    try:
        with pytest.raises(AssertionError, match=f"segments left in {SHM_DIR}: .*{segment.name}"):
            check.check()
    finally:
        segment.unlink()
    check.check()


def test_leak_check_leaves_segments_of_running_sessions_alone(tmp_path: Path) -> None:
    """Another program using ember at the same time: its session's lock is held."""
    check = LeakCheck(temp_dir=tmp_path)
    session = os.urandom(4).hex()
    lock = Path(SHM_DIR) / f".ember-{session}.lock"
    segment = Path(SHM_DIR) / f"ember-{session}-1-0"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        segment.write_bytes(b"in use")
        check.check()
    finally:
        os.close(fd)
        segment.unlink()
        lock.unlink()


def test_leak_check_names_an_ember_temp_folder_left(tmp_path: Path) -> None:
    check = LeakCheck(temp_dir=tmp_path)
    (tmp_path / "notes.txt").write_text("not ember's")  # only ember-* entries count
    check.check()
    (tmp_path / "ember-upload-abc").mkdir()
    with pytest.raises(AssertionError, match=r"temp folders left in .*\['ember-upload-abc'\]"):
        check.check()
    LeakCheck().check()  # without a temp_dir, no temp folder is looked at


def test_leak_check_keeps_the_error_of_a_failing_block(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), LeakCheck(temp_dir=tmp_path):
        ember.init(num_cpus=1)
        ember.get(ember.remote(lambda: 1 / 0).remote())
    assert not ember.is_initialized()  # shut down all the same


# -- ServeTestClient -----------------------------------------------------------------------------
def shop_deployment() -> Any:
    """A deployment made inside a function, so its class ships to replicas by value."""

    @serve.deployment
    class Shop:
        def __init__(self, name: str) -> None:
            self.name = name
            self.items: dict[str, int] = {}

        async def __call__(self, request: Any) -> Any:
            if request.method == "POST":
                item = await request.json()
                self.items[item["name"]] = item["price"]
            return {"shop": self.name, "path": request.url.path, "items": self.items}

        def count(self) -> int:
            return len(self.items)

    return Shop


def test_serve_test_client_starts_and_stops_everything_it_needs(tmp_path: Path) -> None:
    with LeakCheck(timeout=15, temp_dir=tmp_path):
        with ServeTestClient(shop_deployment().bind("north"), route_prefix="/shop",
                             init_options={"num_cpus": 2}) as client:
            assert client.base_url == f"http://127.0.0.1:{client.port}/shop/"
            created = client.post("/items", json={"name": "lamp", "price": 12})
            assert created.status_code == 200
            assert created.json() == {"shop": "north", "path": "/shop/items",
                                      "items": {"lamp": 12}}
            assert client.handle.count.remote().result() == 1
            port = client.port
        assert not ember.is_initialized()  # it started the runtime, so it stopped it
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/shop", timeout=5)


@pytest.mark.usefixtures("ember_local")
def test_serve_test_client_leaves_what_was_running_before() -> None:
    try:
        serve.run(shop_deployment().bind("west"), name="west", route_prefix="/west", port=0)
        with ServeTestClient(shop_deployment().bind("east"), name="east", route_prefix="/east") as client:
            assert client.get("/").json()["shop"] == "east"
            assert client.get(f"http://127.0.0.1:{client.port}/west").json()["shop"] == "west"
        assert ember.is_initialized()
        assert set(serve.status().applications) == {"west"}  # only its own app is gone
    finally:
        serve.shutdown()


def test_serve_test_client_says_when_it_is_not_entered() -> None:
    client = ServeTestClient(shop_deployment().bind("south"))
    with pytest.raises(RuntimeError, match="with ServeTestClient"):
        _ = client.handle
    with pytest.raises(ValueError, match="must start with '/'"):
        ServeTestClient(shop_deployment().bind("south"), route_prefix="shop")
    client.close()
