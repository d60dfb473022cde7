"""``ember/core/_api.py``: starting and stopping the runtime, and the checks on what callers pass."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.errors import RuntimeNotInitializedError
from ember.testing import LeakCheck


@ember.remote
def double(x):
    return 2 * x


# -- lifecycle ------------------------------------------------------------------------------


def test_first_call_that_needs_a_runtime_starts_the_local_one():
    assert not ember.is_initialized()
    try:
        ref = double.remote(21)
        assert ember.is_initialized()
        assert ember.get(ref, timeout=30) == 42
        assert ember.get_runtime_context().backend == "local"
    finally:
        LeakCheck().check()
    assert not ember.is_initialized()


@pytest.mark.parametrize(
    "first_use",
    [lambda: ember.put(1), ember.cluster_resources, ember.available_resources,
     ember.get_runtime_context],
    ids=["put", "cluster_resources", "available_resources", "get_runtime_context"],
)
def test_every_runtime_call_auto_initializes(first_use):
    try:
        first_use()
        assert ember.is_initialized()
    finally:
        LeakCheck().check()


def test_init_returns_a_context_manager_that_shuts_down():
    with ember.init(num_cpus=1) as info:
        assert info.backend == "local"
        assert ember.get(double.remote(1), timeout=30) == 2
    assert not ember.is_initialized()


def test_init_twice_raises_and_says_how_to_allow_it(ember_local):
    with pytest.raises(RuntimeError, match="ignore_reinit_error=True"):
        ember.init()


def test_init_twice_with_ignore_reinit_error_keeps_the_running_runtime(ember_local):
    job = ember.get_runtime_context().get_job_id()

    ember.init(num_cpus=8, ignore_reinit_error=True)

    assert ember.get_runtime_context().get_job_id() == job
    assert ember.cluster_resources()["CPU"] == 2


def test_shutdown_twice_and_without_a_runtime_is_harmless():
    ember.shutdown()
    ember.init(num_cpus=1)
    ember.shutdown()
    ember.shutdown()
    assert not ember.is_initialized()


def test_a_new_runtime_starts_after_shutdown():
    for cpus in (1, 2):
        ember.init(num_cpus=cpus)
        try:
            assert ember.cluster_resources()["CPU"] == cpus
            assert ember.get(double.remote(cpus), timeout=30) == 2 * cpus
        finally:
            LeakCheck().check()


def test_init_reports_the_resources_it_was_given():
    ember.init(num_cpus=3, num_gpus=2, resources={"tpu_slice": 4},
               object_store_memory=64 * 2**20, _memory=2**30)
    try:
        given = {"CPU": 3, "GPU": 2, "tpu_slice": 4, "object_store_memory": 64 * 2**20,
                 "memory": 2**30,  # Ray's ray.init(_memory=...)
                 # as Ray does, the node's own resources, to pin work to it
                 "node:127.0.0.1": 1, "node:__internal_head__": 1}
        assert ember.cluster_resources() == given
        assert ember.available_resources() == given
        held = ember.put(np.zeros(2**20))  # 8 MiB: large enough to live in shared memory
        free = ember.available_resources()["object_store_memory"]
        assert 55 * 2**20 <= free <= 56 * 2**20
        del held
    finally:
        LeakCheck().check()


def test_the_local_backend_is_one_node_with_what_it_was_given(ember_local):
    [node] = ember.nodes()

    assert node["IsHead"] and node["NodeID"] == ember.get_runtime_context().get_node_id()
    assert node["Resources"]["CPU"] == 2 and node["AvailableResources"]["CPU"] == 2


def test_init_with_a_namespace_reports_it():
    ember.init(num_cpus=1, namespace="research")
    try:
        assert ember.get_runtime_context().namespace == "research"
    finally:
        LeakCheck().check()


# -- misuse of init -------------------------------------------------------------------------


def test_unknown_backend_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'locl' \(known: 'local', 'ray'\)"):
        ember.init("locl")
    assert not ember.is_initialized()


def test_address_is_refused_for_the_local_backend():
    # (An address with no backend named picks the ray backend.)
    with pytest.raises(ValueError, match="address is only for backend='ray'"):
        ember.init("local", address="ray://head:10001")
    assert not ember.is_initialized()


def test_unknown_keyword_for_the_local_backend_is_named():
    # a Ray-only option (include_dashboard is ember's own since the dashboard exists)
    with pytest.raises(TypeError, match="_system_config"):
        ember.init(_system_config={})
    assert not ember.is_initialized()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_cpus": -1}, "num_cpus=-1 must be >= 0"),
        ({"num_gpus": -1}, "num_gpus=-1 must be >= 0"),
        ({"resources": {"CPU": 4}}, "use num_cpus / num_gpus"),
        ({"resources": {"widget": -1}}, "resource 'widget'=-1 must be >= 0"),
        ({"object_store_memory": 0}, "object_store_memory=0 must be a positive number of bytes"),
    ],
)
def test_invalid_init_arguments_are_refused(options, fragment):
    with pytest.raises(ValueError) as info:
        ember.init(**options)

    assert fragment in str(info.value)
    assert not ember.is_initialized()


# -- misuse of the calls --------------------------------------------------------------------


def test_get_refuses_things_that_are_not_refs():
    with pytest.raises(TypeError, match=r"ember.get\(\) takes ObjectRefs, got int"):
        ember.get(5)
    with pytest.raises(TypeError, match="got str"):
        ember.get(["not a ref"])


def test_get_of_a_generator_says_to_iterate_it(ember_local):
    @ember.remote
    def gen():
        yield 1

    with pytest.raises(TypeError, match="iterate an ObjectRefGenerator"):
        ember.get(gen.remote())


def test_get_with_negative_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout=-1 must be >= 0 or None"):
        ember.get([], timeout=-1)


def test_get_of_an_empty_list_is_an_empty_list():
    assert ember.get([]) == []


def test_put_of_an_object_ref_is_refused(ember_local):
    with pytest.raises(TypeError, match="pass the ObjectRef itself"):
        ember.put(ember.put(1))


def test_wait_checks_its_arguments(ember_local):
    ref = ember.put(1)

    with pytest.raises(TypeError, match="takes a list of ObjectRefs"):
        ember.wait(ref)
    with pytest.raises(ValueError, match="same ObjectRef more than once"):
        ember.wait([ref, ref])
    with pytest.raises(ValueError, match=r"num_returns=2 must be between 0 and the number of refs \(1\)"):
        ember.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match=r"timeout=-0\.5"):
        ember.wait([ref], timeout=-0.5)
    assert ember.wait([], num_returns=0) == ([], [])


def test_kill_cancel_and_get_actor_check_their_arguments(ember_local):
    with pytest.raises(TypeError, match=r"ember.kill\(\) takes an ActorHandle, got str"):
        ember.kill("actor")
    with pytest.raises(TypeError, match=r"ember.cancel\(\) takes ObjectRefs"):
        ember.cancel("ref")
    with pytest.raises(ValueError, match="actor name must be a non-empty string"):
        ember.get_actor("")


def test_calls_on_a_runtime_that_was_shut_down_say_so():
    ember.init(num_cpus=1)
    from ember.core._api import current_backend

    backend = current_backend()
    LeakCheck().check()

    with pytest.raises(RuntimeNotInitializedError, match=r"ember\.init"):
        backend.put(1)
