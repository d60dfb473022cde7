"""``ember.util.state`` on the local backend: what a user sees of actors, tasks, objects, nodes
and logs while a program runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ember
from ember.errors import ActorDiedError
from ember.testing import LeakCheck, eventually
from ember.util import state

MB = 1024 * 1024


def test_a_dead_actor_shows_why_it_died_with_the_traceback(ember_local):
    @ember.remote
    class Loader:
        def __init__(self, path):
            raise FileNotFoundError(f"no weights at {path}")

        def ping(self):
            return 1

    @ember.remote
    class Alive:
        def pid(self):
            return os.getpid()

    broken = Loader.options(name="loader").remote("/models/missing.pt")
    with pytest.raises(ActorDiedError):
        ember.get(broken.ping.remote(), timeout=60)
    alive = Alive.remote()
    pid = ember.get(alive.pid.remote(), timeout=60)

    dead = state.list_actors(filters=[("state", "=", "DEAD")])
    assert [(a.class_name, a.name) for a in dead] == [("Loader", "loader")]
    cause = dead[0].death_cause
    assert "FileNotFoundError: no weights at /models/missing.pt" in cause
    assert "Traceback (most recent call last)" in cause
    [running] = state.list_actors(filters=[("class_name", "=", "Alive")])
    assert (running.state, running.pid) == ("ALIVE", pid)
    assert state.get_actor(running.actor_id) == running
    assert running.is_detached is False
    assert state.get_actor("ffffffffffffffff") is None


def test_tasks_are_counted_by_function_and_state_with_recent_failures(ember_local):
    @ember.remote
    def parse(line):
        key, _value = line.split("=")
        return key

    ember.get([parse.remote(f"k{i}=v") for i in range(5)], timeout=60)
    failed = parse.remote("no equals sign")
    with pytest.raises(ValueError):
        ember.get(failed, timeout=60)

    summary = state.summarize_tasks()
    assert summary["summary"]["parse"]["state_counts"] == {"FINISHED": 5, "FAILED": 1}
    [failure] = summary["recent_failures"]
    assert failure["error_type"] == "ValueError"
    assert "not enough values to unpack" in failure["error_message"]
    assert "Remote traceback" in failure["error_message"]
    [row] = state.list_tasks(filters=[("state", "=", "FAILED")])
    assert (row.task_id, row.func_or_class_name, row.type) == (failure["task_id"], "parse",
                                                               "NORMAL_TASK")
    assert state.get_task(row.task_id).error_message == failure["error_message"]
    assert len(state.list_tasks(filters=[("state", "=", "FINISHED")], limit=3)) == 3


@pytest.mark.parametrize("ember_local", [{"num_cpus": 1}], indirect=True)
def test_running_and_waiting_tasks_and_actor_calls(ember_local, tmp_path):
    flag = str(tmp_path / "go")

    @ember.remote(num_cpus=1)
    def hold(path):
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return os.getpid()

    @ember.remote(num_cpus=0)
    class Waiter:
        def wait(self, path):
            import time

            while not os.path.exists(path):
                time.sleep(0.01)

    first, second = hold.remote(flag), hold.remote(flag)  # one CPU: the second waits for it
    waiter = Waiter.remote()
    calls = [waiter.wait.remote(flag), waiter.wait.remote(flag)]  # one at a time, in order

    def states(column, value):
        return sorted(t.state for t in state.list_tasks(filters=[(column, "=", value)]))

    eventually(lambda: states("name", "hold") == ["PENDING_NODE_ASSIGNMENT", "RUNNING"],
             what="one hold running and one waiting for the CPU")
    eventually(lambda: states("func_or_class_name", "Waiter.wait") == [
        "RUNNING", "SUBMITTED_TO_WORKER"], what="the first call running, the second queued")
    [node] = state.list_nodes()
    assert node.resources_used["CPU"] == pytest.approx(1.0)
    [running] = state.list_tasks(filters=[("name", "=", "hold"), ("state", "=", "RUNNING")])
    open(flag, "w").close()
    assert running.worker_pid in ember.get([first, second], timeout=60)
    ember.get(calls, timeout=60)
    assert state.summarize_tasks()["summary"]["hold"]["state_counts"] == {"FINISHED": 2}


def test_objects_show_their_size_and_whether_they_are_spilled():
    ember.init(num_cpus=1, object_store_memory=3 * MB)
    try:
        small = ember.put(b"x" * 100)
        big = [ember.put(np.ones(MB // 8 * 2)) for _ in range(3)]  # 2 MiB each: 6 over 3

        rows = {o.object_id: o for o in state.list_objects(limit=1000)}
        assert rows[small.hex()].state == "IN_MEMORY"
        assert rows[small.hex()].object_size >= 100
        sizes = [rows[ref.hex()].object_size for ref in big]
        assert all(size >= 2 * MB for size in sizes)
        assert {rows[ref.hex()].state for ref in big} == {"SPILLED", "IN_MEMORY"}
        [node] = state.list_nodes()
        assert node.object_store_spilled_bytes >= 2 * MB
        spilled = state.list_objects(filters=[("state", "=", "SPILLED")])
        assert {o.object_id for o in spilled} < {ref.hex() for ref in big}
    finally:
        LeakCheck().check()


def test_the_state_api_works_inside_a_task(ember_local):
    @ember.remote
    class Named:
        def ping(self):
            return 1

    @ember.remote
    def look():
        from ember.util import state as inner

        return [(a.class_name, a.state) for a in inner.list_actors()]

    actor = Named.remote()
    ember.get(actor.ping.remote(), timeout=60)
    assert ("Named", "ALIVE") in ember.get(look.remote(), timeout=60)


def test_worker_output_is_kept_per_actor_and_per_task(ember_local):
    @ember.remote
    class Printer:
        def say(self, text):
            print(text, flush=True)
            return os.getpid()

    @ember.remote
    def shout(text):
        import sys

        print(text, file=sys.stderr, flush=True)

    printer = Printer.remote()
    ember.get(printer.say.remote("first line"), timeout=60)
    ember.get(printer.say.remote("second line"), timeout=60)
    ember.get(shout.remote("from a task"), timeout=60)
    actor_id = state.list_actors(filters=[("class_name", "=", "Printer")])[0].actor_id
    task_id = state.list_tasks(filters=[("name", "=", "shout")])[0].task_id

    eventually(lambda: list(state.get_log(actor_id=actor_id)) == ["first line", "second line"],
             what="the actor's two lines")
    eventually(lambda: list(state.get_log(task_id=task_id)) == ["from a task"],
             what="the task's line")


def test_address_and_bad_arguments_are_refused(ember_local):
    with pytest.raises(ValueError, match="use the ember CLI"):
        state.list_actors("auto")
    with pytest.raises(ValueError, match="predicate"):
        state.list_tasks(filters=[("state", "is", "RUNNING")])
    with pytest.raises(ValueError, match="exactly one of"):
        list(state.get_log())


def test_an_actor_whose_process_died_shows_what_it_wrote_last(ember_local):
    @ember.remote
    class Fragile:
        def crash(self):
            import sys

            print("Fatal Python error: Segmentation fault", file=sys.stderr, flush=True)
            os._exit(1)

    fragile = Fragile.remote()
    with pytest.raises(ActorDiedError):
        ember.get(fragile.crash.remote(), timeout=60)

    def cause():
        found = state.list_actors(filters=[("class_name", "=", "Fragile"),
                                           ("state", "=", "DEAD")])
        text = found[0].death_cause if found else ""
        return text if "Segmentation fault" in text else None

    text = eventually(cause, what="the crash's last words in the death cause")
    assert "exit code 1" in text
    assert text.endswith("Fatal Python error: Segmentation fault")
