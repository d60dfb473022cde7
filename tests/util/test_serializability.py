"""``ember.util.inspect_serializability``: what in an object cannot be pickled."""

from __future__ import annotations

import io
import threading

from ember.util import inspect_serializability

LOCK = threading.Lock()


class Holder:
    def __init__(self):
        self.count = 1
        self.lock = threading.Lock()
        self.items = {"fine": [1, 2], "bad": [threading.Lock()]}


def test_a_picklable_object_passes_with_no_failures():
    out = io.StringIO()

    assert inspect_serializability(lambda x: x + 1, name="adder", print_file=out) == (True, set())
    assert "adder can be serialized" in out.getvalue()


def test_a_function_names_the_global_that_cannot_be_pickled():
    def uses_the_global_lock():  # defined here, so cloudpickle ships it by value
        return LOCK

    out = io.StringIO()

    ok, failures = inspect_serializability(uses_the_global_lock, name="task", print_file=out)

    assert not ok
    [failure] = failures
    assert (failure.obj, failure.name, failure.parent, failure.path) == (
        LOCK, "LOCK", uses_the_global_lock, "task -> LOCK")
    printed = out.getvalue()
    assert "Checking serializability of task" in printed
    assert "global 'LOCK'" in printed and "cannot pickle '_thread.lock' object" in printed


def test_a_closure_and_nested_attributes_are_walked_down_to_the_failing_members():
    held = Holder()

    def closure():
        return held

    out = io.StringIO()
    ok, failures = inspect_serializability(closure, name="closure", depth=4, print_file=out)

    assert not ok
    assert sorted(f.path for f in failures) == ["closure -> held -> items -> 'bad' -> [0]",
                                                "closure -> held -> lock"]
    assert "closure -> held -> lock" in out.getvalue()  # the summary lists every failure


def test_depth_stops_the_walk_and_reports_where_it_stopped():
    out = io.StringIO()
    ok, failures = inspect_serializability(Holder(), name="holder", depth=1, print_file=out)

    assert not ok
    assert sorted(f.path for f in failures) == ["holder -> items", "holder -> lock"]
    assert "depth reached" in out.getvalue()
