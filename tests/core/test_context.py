"""``ember/core/_context.py``: what ``get_runtime_context()`` reports."""

from __future__ import annotations

import pytest

import ember
from ember.core._context import RuntimeContext


def make(**fields):
    base = {"backend": "local", "job_id": "j1", "node_id": "n1", "namespace": "default",
            "worker_id": "driver"}
    return RuntimeContext(**{**base, **fields})


def test_accelerator_ids_default_to_no_gpu():
    assert make().get_accelerator_ids() == {"GPU": []}


def test_accelerator_ids_are_a_copy():
    ctx = make(accelerator_ids={"GPU": ["1"]})

    ids = ctx.get_accelerator_ids()
    ids["GPU"].append("2")

    assert ctx.get_accelerator_ids() == {"GPU": ["1"]}


def test_getters_and_summary():
    ctx = make(task_id="t1", actor_id="a1", assigned_resources={"CPU": 1.0})

    assert (ctx.get_job_id(), ctx.get_node_id(), ctx.get_task_id(), ctx.get_actor_id(),
            ctx.get_worker_id()) == ("j1", "n1", "t1", "a1", "driver")
    assert ctx.get_assigned_resources() == {"CPU": 1.0}
    assert ctx.get() == {"backend": "local", "job_id": "j1", "node_id": "n1",
                         "namespace": "default", "task_id": "t1", "actor_id": "a1"}
    assert ctx.was_current_actor_reconstructed is False


def test_summary_has_ray_shape_ids_and_leaves_out_what_the_caller_is_not():
    driver = make().get()
    task = make(task_id="t1").get()

    assert "task_id" not in driver and "actor_id" not in driver
    assert "actor_id" not in task
    assert (task["task_id"].hex(), task["job_id"].hex(), task["node_id"].hex()) == (
        "t1", "j1", "n1")  # Ray's ids there are objects with .hex()


def test_assigned_resources_are_asked_for_when_a_backend_gives_a_hook():
    calls = []
    ctx = make(_assigned=lambda: calls.append(1) or {"CPU": 2.0})

    assert calls == []  # nothing asked until the user does
    assert ctx.get_assigned_resources() == {"CPU": 2.0}


def test_current_actor_outside_an_actor_raises():
    with pytest.raises(RuntimeError, match="inside an actor"):
        _ = make().current_actor


def test_driver_context_on_the_local_backend(ember_local):
    ctx = ember.get_runtime_context()

    assert ctx.backend == "local"
    assert ctx.get_task_id() is None and ctx.get_actor_id() is None
    assert ctx.namespace == "default"


def test_task_and_actor_report_the_same_job_as_the_driver(ember_local):
    @ember.remote
    def job():
        return ember.get_runtime_context().get_job_id()

    @ember.remote
    class Job:
        def job(self):
            return ember.get_runtime_context().get_job_id()

    driver_job = ember.get_runtime_context().get_job_id()

    assert ember.get([job.remote(), Job.remote().job.remote()], timeout=30) == [driver_job] * 2


@pytest.mark.parametrize("ember_local", [{"num_cpus": 2, "namespace": "team"}], indirect=True)
def test_tasks_see_the_runtime_namespace(ember_local):
    @ember.remote
    def namespace():
        return ember.get_runtime_context().namespace

    assert ember.get(namespace.remote(), timeout=30) == "team"


def test_actor_name_as_ray_reports_it(ember_local):
    @ember.remote
    class Named:
        def name(self):
            return ember.get_runtime_context().get_actor_name()

    @ember.remote
    def in_a_task():
        return ember.get_runtime_context().get_actor_name()

    named = Named.options(name="ctx-named").remote()
    results = ember.get([named.name.remote(), Named.remote().name.remote(), in_a_task.remote()],
                        timeout=30)

    assert results == ["ctx-named", "", None]  # unnamed actor: "", not an actor: None
    assert ember.get_runtime_context().get_actor_name() is None
