"""``ember.util.multiprocessing.Pool``: the standard library's Pool API over actors."""

from __future__ import annotations

import builtins
import multiprocessing
import os
import time

import pytest

import ember
from ember.util.multiprocessing import Pool, TimeoutError
from tests._support import Gate


def square_and_pid(x):
    time.sleep(0.02)  # long enough that one process cannot take every chunk
    return x * x, os.getpid()


def wait_for_gate_at_zero(x, gate_path):
    deadline = time.monotonic() + 60
    while x == 0 and not os.path.exists(gate_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def fail_at_three(x):
    if x == 3:
        raise KeyError(f"no key {x}")
    return x


def note_pid(path):
    with open(path, "a") as out:
        out.write(f"{os.getpid()}\n")


def pid(_):
    time.sleep(0.02)
    return os.getpid()


def test_map_and_starmap_run_in_several_processes_and_keep_the_order(ember_local):
    with Pool(processes=2) as pool:
        results = pool.map(square_and_pid, range(16))
        assert [value for value, _ in results] == [x * x for x in range(16)]
        pids = {p for _, p in results}
        assert len(pids) == 2 and os.getpid() not in pids
        assert pool.starmap(pow, [(2, 3), (3, 2), (10, 0)]) == [8, 9, 1]
        assert pool.apply(divmod, (7, 2)) == (3, 1)
        assert pool.apply(dict, kwargs={"a": 1}) == {"a": 1}
        assert pool.map(square_and_pid, []) == []
        assert [v for v, _ in pool.map(square_and_pid, range(5), chunksize=2)] == [
            0, 1, 4, 9, 16]


def test_imap_keeps_the_order_and_imap_unordered_yields_as_results_finish(ember_local,
                                                                          tmp_path):
    gate = Gate(tmp_path)
    with Pool(processes=2) as pool:
        # imap: item 0 is held back, so nothing comes out although 1, 2, 3 can finish.
        ordered = pool.imap(_with_gate(gate), range(4))
        with pytest.raises(TimeoutError):
            ordered.next(timeout=0.5)
        gate.open()
        assert list(ordered) == [0, 1, 2, 3]

    gate = Gate(tmp_path, "second")
    with Pool(processes=2) as pool:
        unordered = pool.imap_unordered(_with_gate(gate), range(4))
        first = next(unordered)  # comes while item 0 is still held back
        assert first != 0
        gate.open()
        assert sorted([first, *unordered]) == [0, 1, 2, 3]


def _with_gate(gate: Gate):
    path = gate.path

    def run(x):
        return wait_for_gate_at_zero(x, path)

    return run


def test_an_exception_in_the_function_raises_in_the_caller_with_its_type(ember_local):
    with Pool(processes=2) as pool:
        with pytest.raises(KeyError, match="no key 3") as raised:
            pool.map(fail_at_three, range(6))
        assert type(raised.value) is KeyError  # as multiprocessing raises it
        assert "fail_at_three" in str(raised.value.__cause__)  # the remote traceback

        results = pool.imap(fail_at_three, range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError):
            next(results)

        errors: list[BaseException] = []
        failed = pool.apply_async(fail_at_three, (3,), error_callback=errors.append)
        failed.wait(timeout=30)
        assert failed.ready() and not failed.successful()
        assert [type(e) for e in errors] == [KeyError]
        with pytest.raises(KeyError):
            failed.get()


def test_async_results_call_back_and_time_out(ember_local):
    with Pool(processes=2) as pool:
        got: list[list[int]] = []
        result = pool.map_async(fail_at_three, [0, 1, 2], callback=got.append)
        assert result.get(timeout=30) == [0, 1, 2]
        assert got == [[0, 1, 2]] and result.successful()

        slow = pool.apply_async(time.sleep, (30,))
        with pytest.raises(TimeoutError) as raised:
            slow.get(timeout=0.2)
        # Caught as multiprocessing's TimeoutError and as the builtin one.
        assert isinstance(raised.value, multiprocessing.TimeoutError)
        assert isinstance(raised.value, builtins.TimeoutError)
        assert not slow.ready()
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()


def test_the_initializer_runs_once_in_each_process(ember_local, tmp_path):
    notes = tmp_path / "pids"
    with Pool(processes=2, initializer=note_pid, initargs=(str(notes),)) as pool:
        used = set(pool.map(pid, range(12)))
    initialized = notes.read_text().split()
    assert len(initialized) == 2 and set(map(int, initialized)) == used


def test_maxtasksperchild_replaces_a_process_after_that_many_chunks(ember_local):
    with Pool(processes=1, maxtasksperchild=2) as pool:
        pids = pool.map(pid, range(6), chunksize=1)
    assert len(set(pids)) == 3 and pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_a_closed_pool_refuses_work_with_value_error(ember_local):
    pool = Pool(processes=2)
    pending = pool.map_async(fail_at_three, [0, 1])
    pool.close()
    for call in (lambda: pool.map(abs, [1]), lambda: pool.apply(abs, (1,)),
                 lambda: pool.imap(abs, [1]), lambda: pool.starmap_async(pow, [(1, 1)])):
        with pytest.raises(ValueError, match="Pool not running"):
            call()
    pool.join()
    assert pending.get(timeout=30) == [0, 1]  # work given before close() still finishes

    running = Pool(processes=1)
    with pytest.raises(ValueError, match="still running"):
        running.join()
    with running:
        pass
    with pytest.raises(ValueError, match="Pool not running"):  # the with block terminated it
        running.map(abs, [1])


def test_processes_are_checked_against_the_cluster(ember_local):
    with pytest.raises(ValueError, match="needs 3 CPUs, and the cluster has 2"):
        Pool(processes=3)
    with pytest.raises(ValueError, match="processes=0"):
        Pool(processes=0)


def test_a_pool_starts_ember_when_it_is_not_running():
    assert not ember.is_initialized()
    try:
        with Pool(processes=1) as pool:
            assert ember.is_initialized()
            assert pool.map(abs, [-1, -2]) == [1, 2]
    finally:
        ember.shutdown()
