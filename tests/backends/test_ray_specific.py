"""What only the ray backend does: translating Ray's exceptions, connecting and attaching to
Ray, ember code inside Ray workers, per-node resource checks and placement-group gangs.

The behaviour both backends share lives in ``test_contract.py``. Remote code is defined inside
the tests, or inside the fixtures of ``conftest.py``, so that cloudpickle ships it by value
(workers never import this module).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

import ember
from ember.core._remote import ActorMeta, MethodMeta
from ember.errors import (
    ActorAlreadyExistsError,
    ActorDiedError,
    ActorUnavailableError,
    BackendError,
    GetTimeoutError,
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    ResourceError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)
from ember.testing import LeakCheck, eventually
from tests._support import Gate

ray = pytest.importorskip("ray")

from ember.core.ray_backend import RayBackend  # noqa: E402
from ember.core.ray_backend._env import forwarded_env, with_forwarded_env  # noqa: E402
from ember.core.ray_backend._mapping import (  # noqa: E402
    GENERATOR_BACKPRESSURE,
    describe_nodes,
    gang_infeasible_reason,
    infeasible_reason,
    meta_from_ray_handle,
    placement_infeasible_reason,
    ray_actor_options,
    ray_task_options,
    translate_error,
)
from ember.util import create_gang, placement_group, remove_placement_group  # noqa: E402
from ember.util.scheduling_strategies import (  # noqa: E402
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

pytestmark = pytest.mark.ray

GET_TIMEOUT = 60


def get(refs, timeout: float = GET_TIMEOUT):
    return ember.get(refs, timeout=timeout)


# -- pure translations (no cluster) -----------------------------------------------------------


def test_only_explicit_task_options_reach_ray_and_streaming_gets_backpressure():
    assert ray_task_options({}, 1) == {}
    assert ray_task_options({"num_cpus": 2, "max_retries": 0}, 1) == {
        "num_cpus": 2, "max_retries": 0}
    assert ray_task_options({}, 3) == {"num_returns": 3}
    assert ray_task_options({"num_returns": "streaming"}, "streaming") == {
        "num_returns": "streaming",
        "_generator_backpressure_num_objects": GENERATOR_BACKPRESSURE,
    }
    # "dynamic" never reaches Ray: the backend collects the items in the task (one result).
    assert ray_task_options({"num_returns": "dynamic"}, 1) == {}


def test_actor_options_leave_unset_values_to_ray():
    assert ray_actor_options({"max_concurrency": None, "get_if_exists": False}) == {}
    assert ray_actor_options({"name": "a", "namespace": "n", "lifetime": "detached",
                              "max_restarts": 2, "resources": {"widget": 1}}) == {
        "name": "a", "namespace": "n", "lifetime": "detached", "max_restarts": 2,
        "resources": {"widget": 1}}


def test_infeasible_reason_judges_each_node_and_says_what_there_is():
    nodes = [{"CPU": 1.0, "GPU": 0.0}, {"CPU": 1.0, "node_b": 1.0}]

    assert infeasible_reason({"CPU": 1.0}, nodes) is None
    assert infeasible_reason({"CPU": 1.0, "node_b": 1.0}, nodes) is None
    reason = infeasible_reason({"CPU": 2.0}, nodes)
    assert reason is not None
    assert "CPU: 2" in reason and "largest node has 1" in reason and "total 2" in reason
    reason = infeasible_reason({"unobtainium": 1.0}, nodes)
    assert reason is not None and "unobtainium" in reason and "total 0" in reason
    reason = infeasible_reason({"GPU": 1.0, "node_b": 1.0}, nodes)
    assert reason is not None and "GPU" in reason


def test_infeasible_reason_needs_one_node_with_everything():
    nodes = [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "node_b": 1.0}]

    reason = infeasible_reason({"GPU": 1.0, "node_b": 1.0}, nodes)

    assert reason is not None and "no single node" in reason


@pytest.mark.parametrize(
    ("strategy", "count", "feasible"),
    [("PACK", 2, True), ("PACK", 3, False), ("STRICT_PACK", 2, False),
     ("STRICT_SPREAD", 2, True), ("STRICT_SPREAD", 3, False), ("SPREAD", 2, True)],
)
def test_gang_feasibility_follows_the_placement_strategy(strategy, count, feasible):
    nodes = [{"CPU": 1.0}, {"CPU": 1.0}]

    reason = gang_infeasible_reason({"CPU": 1.0}, count, strategy, nodes)

    assert (reason is None) is feasible
    if reason is not None:
        assert strategy in reason


def test_placement_feasibility_of_unlike_bundles_uses_only_sure_reasons():
    nodes = [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}]

    assert placement_infeasible_reason([{"CPU": 2}, {"CPU": 1, "GPU": 1}], "PACK", nodes) is None
    assert "STRICT_PACK" in placement_infeasible_reason(
        [{"CPU": 2}, {"CPU": 1, "GPU": 1}], "STRICT_PACK", nodes)
    assert "bundle 1 asks for GPU: 2" in placement_infeasible_reason(
        [{"CPU": 1}, {"GPU": 2}], "SPREAD", nodes)
    assert "cluster has 2" in placement_infeasible_reason(
        [{"CPU": 0.5}, {"CPU": 0.5, "GPU": 0.5}, {"CPU": 0.25}], "STRICT_SPREAD", nodes)


def test_describe_nodes_says_what_each_node_has_free_of_what_was_asked():
    nodes = [{"NodeID": "aaaaaaaaaaaa", "NodeManagerAddress": "10.0.0.1", "IsHead": True,
              "Resources": {"CPU": 1.0, "memory": 5.0}, "AvailableResources": {"CPU": 0.0}},
             {"NodeID": "bbbbbbbbbbbb", "NodeManagerAddress": "10.0.0.2",
              "Resources": {"CPU": 2.0}, "AvailableResources": {"CPU": 0.5}}]

    assert describe_nodes({"CPU": 1.0}, nodes) == (
        "node aaaaaaaa (10.0.0.1, head): CPU 0 free of 1; "
        "node bbbbbbbb (10.0.0.2): CPU 0.5 free of 2")


def test_forwarded_env_is_the_storage_settings_and_fsspec_config():
    environ = {"AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL": "http://s3", "HOME": "/home/u",
               "FSSPEC_S3_ANON": "false", "AZURE_STORAGE_ACCOUNT_NAME": "acct",
               "GOOGLE_CLOUD_PROJECT": "p", "PATH": "/bin", "MY_AWS_THING": "x"}
    conf = {"gcs": {"project": "q"}, "s3": {"key": "from-conf"}, "my_fs": {"a": 1},
            "memory": {}, "file": {"opener": object()}}

    assert forwarded_env(environ, conf) == {
        "AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL": "http://s3", "FSSPEC_S3_ANON": "false",
        "AZURE_STORAGE_ACCOUNT_NAME": "acct", "GOOGLE_CLOUD_PROJECT": "p",
        "FSSPEC_GCS": '{"project": "q"}', "FSSPEC_S3": '{"key": "from-conf"}'}


def test_forwarded_env_travels_in_a_setup_hook_and_the_users_env_vars_win(monkeypatch):
    hooked = []
    monkeypatch.setitem(sys.modules, "user_hooks", type(sys)("user_hooks"))
    sys.modules["user_hooks"].setup = lambda: hooked.append("by name")  # type: ignore[attr-defined]
    user = {"env_vars": {"AWS_REGION": "user-wins"}, "worker_process_setup_hook": "user_hooks.setup"}

    merged = with_forwarded_env(user, {"AWS_REGION": "driver", "AWS_SECRET_ACCESS_KEY": "s3cr3t"})

    assert merged is not None and merged["env_vars"] == {"AWS_REGION": "user-wins"}
    assert "s3cr3t" not in repr(merged)  # only the hook holds it: Ray logs env_vars to disk
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    merged["worker_process_setup_hook"]()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and hooked == ["by name"]
    assert with_forwarded_env(None, {}) is None
    assert with_forwarded_env({"env_vars": {"A": "1"}}, {"A": "2"}) == {"env_vars": {"A": "1"}}


def test_system_errors_become_ember_errors():
    rx = ray.exceptions
    cases = [
        (rx.ActorDiedError(), ActorDiedError),
        (rx.ActorUnavailableError("restarting", None), ActorUnavailableError),
        (rx.WorkerCrashedError(), WorkerCrashedError),
        (rx.TaskCancelledError(), TaskCancelledError),
        (rx.GetTimeoutError("not ready"), GetTimeoutError),
        (rx.ObjectLostError("00" * 28, None, "call site"), ObjectLostError),
        (rx.OwnerDiedError("00" * 28, None, "call site"), ObjectLostError),
        (rx.OutOfMemoryError("memory"), OutOfMemoryError),
        (rx.RaySystemError("boom"), BackendError),
        (rx.ActorAlreadyExistsError("taken"), ActorAlreadyExistsError),
        (rx.ObjectStoreFullError("full"), ObjectStoreFullError),
        (rx.RuntimeEnvSetupError("no pip"), RuntimeEnvSetupError),
    ]
    for error, expected in cases:
        translated = translate_error(error)
        assert isinstance(translated, expected), (error, translated)
        assert not isinstance(translated, rx.RayError)
    plain = KeyError("not from ray")
    assert translate_error(plain) is plain


def test_task_error_keeps_the_user_type_and_passes_ember_errors_through():
    rx = ray.exceptions
    raised = rx.RayTaskError("f", "Traceback (most recent call last):\n  x", ValueError("bad"),
                             proctitle="ray::f()").as_instanceof_cause()

    translated = translate_error(raised)

    assert isinstance(translated, ValueError) and isinstance(translated, TaskError)
    assert not isinstance(translated, rx.RayError)
    assert translated.args == ("bad",)
    nested = TaskError.wrap(KeyError("inner"), "child", "tb")
    outer = rx.RayTaskError("parent", "tb", nested, proctitle="p").as_instanceof_cause()
    assert translate_error(outer) is nested
    interrupted = rx.RayTaskError("t", "tb", rx.TaskCancelledError(), proctitle="p")
    assert isinstance(translate_error(interrupted), TaskCancelledError)


def test_ray_backend_public_names_are_pinned():
    import ember.core.ray_backend as package

    assert package.__all__ == ["RayBackend", "inside_ray_worker"]


def test_importing_ember_and_the_backend_does_not_import_ray():
    code = ("import sys, ember, ember.core.ray_backend; "
            "assert 'ray' not in sys.modules, 'ray was imported'")

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- connecting and attaching ------------------------------------------------------------------


def test_auto_address_without_a_cluster_says_how_to_start_one(tmp_path, monkeypatch):
    if _gcs_servers_running():
        pytest.skip("another Ray instance runs on this machine, and address='auto' joins any")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `ray start` would have left its address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    try:
        with pytest.raises(BackendError, match="ray start --head"):
            ember.init(backend="ray", address="auto")
    finally:
        ember.shutdown()  # in case it found a cluster after all

    assert not ray.is_initialized()


def _gcs_servers_running() -> bool:
    import psutil

    return any(proc.info["name"] == "gcs_server" and proc.info["status"] != psutil.STATUS_ZOMBIE
               for proc in psutil.process_iter(["name", "status"]))


@pytest.mark.slow
def test_ember_attaches_to_a_ray_the_program_started_and_leaves_it_running():
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        ember.init(backend="ray")

        @ember.remote
        def double(x):
            return 2 * x

        assert get(double.remote(21)) == 42
        ember.shutdown()
        assert ray.is_initialized(), "ember.shutdown() stopped a Ray that ember did not start"

        @ray.remote
        def still_there():
            return "yes"

        assert ray.get(still_there.remote(), timeout=GET_TIMEOUT) == "yes"
    finally:
        ember.shutdown()
        ray.shutdown()


# -- on a running Ray ----------------------------------------------------------------------------


@pytest.fixture(scope="class")
def on_ray() -> Iterator[None]:
    ember.init(backend="ray", num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        LeakCheck(timeout=30).check()


@pytest.mark.usefixtures("on_ray")
class TestOnRay:
    def test_errors_that_reach_the_caller_are_ember_errors_not_ray_errors(self):
        @ember.remote
        def reject():
            raise ValueError("rejected")

        @ember.remote
        class Quitter:
            def quit(self):
                os._exit(1)

        with pytest.raises(ValueError) as info:
            get(reject.remote())
        assert isinstance(info.value, TaskError)
        assert not isinstance(info.value, ray.exceptions.RayError)
        assert "ray::" in str(info.value) and "Traceback" in str(info.value)

        with pytest.raises(ActorDiedError) as died:
            get(Quitter.remote().quit.remote())
        assert not isinstance(died.value, ray.exceptions.RayError)

    def test_get_timeout_is_embers_and_a_timeout_error(self, gate: Gate, wait_until_exists):
        @ember.remote
        def wait_for_gate(path):
            wait_until_exists(path)
            return "opened"

        ref = wait_for_gate.remote(gate.path)
        try:
            with pytest.raises(GetTimeoutError) as info:
                ember.get(ref, timeout=0.1)
        finally:
            gate.open()
        assert isinstance(info.value, TimeoutError)
        assert not isinstance(info.value, ray.exceptions.RayError)
        assert get(ref) == "opened"

    def test_a_nested_task_error_reaches_the_driver_with_its_own_type(self):
        @ember.remote
        def child():
            raise LookupError("deep down")

        @ember.remote
        def parent():
            return ember.get(child.remote(), timeout=60)

        with pytest.raises(LookupError, match="deep down") as info:
            get(parent.remote())
        assert isinstance(info.value, TaskError)

    def test_plain_ray_code_can_call_ember_inside_its_tasks(self):
        @ember.remote
        def square(x):
            return x * x

        @ray.remote
        def ray_task(refs):
            from ember.core._api import current_backend

            backend = current_backend()
            values = [*ember.get(refs, timeout=60), ember.get(square.remote(5), timeout=60)]
            return type(backend).__name__, backend._owned, values

        name, owned, values = ray.get(ray_task.remote([ember.put(2), square.remote(3)]),
                                      timeout=GET_TIMEOUT)

        assert name == "RayBackend"
        assert owned is False  # attached to the worker's Ray, never started a new one
        assert values == [2, 9, 25]

    def test_async_functions_run_as_tasks_although_ray_refuses_them(self):
        import asyncio

        @ember.remote
        async def later(x):
            await asyncio.sleep(0.01)
            return x + 1

        @ember.remote
        async def ticks(n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

        assert get(later.remote(1)) == 2
        assert [get(ref) for ref in ticks.remote(3)] == [0, 1, 2]

    def test_named_actor_found_from_a_task_keeps_its_method_options(self, splitter_class):
        name = f"splitter-{uuid.uuid4().hex[:8]}"

        @ember.remote
        def use_by_name(name):
            left, right = ember.get_actor(name).halves.remote("abcd")
            return ember.get([left, right], timeout=60)

        actor = splitter_class.options(name=name).remote()
        try:
            assert get(use_by_name.remote(name)) == ["ab", "cd"]
        finally:
            ember.kill(actor)

    def test_get_actor_of_an_actor_made_by_plain_ray(self):
        name = f"plain-{uuid.uuid4().hex[:8]}"

        @ray.remote
        class Plain:
            def ping(self):
                return "pong"

            def count(self, n):
                for i in range(n):  # noqa: UP028 (Ray 2.60 breaks `yield from`, see _callables)
                    yield i

        handle = Plain.options(name=name).remote()
        try:
            found = ember.get_actor(name)
            assert get(found.ping.remote()) == "pong"
            assert [get(ref) for ref in found.count.remote(3)] == [0, 1, 2]
        finally:
            ray.kill(handle)

    def test_available_resources_report_a_fully_taken_resource_as_zero(self):
        @ember.remote(num_cpus=2)
        class Hog:
            def ping(self):
                return "pong"

        hog = Hog.remote()
        try:
            get(hog.ping.remote())
            eventually(lambda: ember.available_resources().get("CPU") == 0.0,
                       what="CPU to be reported as 0 while the actor holds both")
        finally:
            ember.kill(hog)
        eventually(lambda: ember.available_resources().get("CPU") == 2.0,
                   what="the CPUs to come back")

    def test_force_cancel_of_a_queued_actor_call_cancels_only_that_call(
        self, tmp_path, gate: Gate, blocker_class
    ):
        started = tmp_path / "started"
        actor = blocker_class.remote()
        running = actor.block.remote(gate.path, str(started))
        eventually(started.exists, what="the blocking call to start")
        queued = actor.ping.remote()
        try:
            ember.cancel(queued, force=True)  # Ray alone refuses force=True for actor calls
        finally:
            # A busy actor handles the cancellation once its running call ends.
            gate.open()
        with pytest.raises(TaskCancelledError):
            get(queued)
        assert get(running) == "unblocked"
        # No further call on this actor: in Ray 2.60 a call cancelled this early can leave a
        # gap in the actor's call sequence, and the next call then fails after 30 s.
        ember.kill(actor)

    def test_reject_infeasible_false_lets_the_request_wait(self):
        @ember.remote(resources={"arrives-later": 1})
        def needs_a_new_node():
            return "ran"

        with pytest.raises(ResourceError, match="arrives-later"):
            get(needs_a_new_node.remote())
        patient = RayBackend(ray, owned=False, reject_infeasible=False)
        ref = patient.submit_task(needs_a_new_node, (), {}, needs_a_new_node._options)
        try:
            ready, _ = ember.wait([ref], timeout=0.5)
            assert ready == []
        finally:
            ember.cancel(ref)

    def test_gang_members_share_one_placement_group_that_holds_their_resources(self):
        @ember.remote
        class Member:
            def group(self):
                return ray.get_runtime_context().get_placement_group_id()

        gang = create_gang(Member, 2, resources_per_member={"CPU": 1}, strategy="STRICT_PACK")
        try:
            assert len(gang) == 2
            assert gang.placement_group is not None
            assert get([m.group.remote() for m in gang]) == [gang.placement_group.id] * 2
            eventually(lambda: ember.available_resources().get("CPU") == 0.0,
                       what="the gang's bundles to hold both CPUs")
        finally:
            gang.shutdown()
        eventually(lambda: ember.available_resources().get("CPU") == 2.0,
                   what="the gang's CPUs to come back")

    def test_placement_groups_and_node_affinity_with_ray_names(self):
        @ember.remote
        class Where:
            def placement(self):
                context = ray.get_runtime_context()
                return context.get_placement_group_id(), context.get_node_id()

        [node] = ember.nodes()
        assert node["IsHead"] and node["Resources"]["CPU"] == 2.0
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
        try:
            assert pg.wait(30) and get(pg.ready()) is not None
            assert pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}] and pg.bundle_count == 2
            member = Where.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=1)).remote()
            assert get(member.placement.remote()) == (pg.id, node["NodeID"])
            eventually(lambda: ember.nodes()[0]["AvailableResources"]["CPU"] == 0.0,
                       what="the group to hold both CPUs")
            ember.kill(member)
        finally:
            remove_placement_group(pg)
        pinned = Where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote()
        assert get(pinned.placement.remote()) == (None, node["NodeID"])
        with pytest.raises(ResourceError, match="STRICT_SPREAD needs 2 nodes"):
            placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        with pytest.raises(ValueError, match="must ask for some resource"):
            placement_group([{"CPU": 0}])

    def test_gang_that_cannot_fit_raises_resource_error_at_once(self):
        @ember.remote
        class Member:
            pass

        with pytest.raises(ResourceError, match="STRICT_PACK"):
            create_gang(Member, 3, resources_per_member={"CPU": 1}, strategy="STRICT_PACK")
        with pytest.raises(ResourceError):
            create_gang(Member, 1, resources_per_member={"CPU": 3})


def test_meta_from_a_ray_handle_lists_its_methods():
    class FakeHandle:
        _ray_method_signatures = {"__init__": None, "__call__": None, "run": None, "gen": None,
                                  "__ray_ready__": None}
        _ray_method_is_generator = {"gen": True}
        _ray_method_num_returns = {"run": None}

        class _ray_actor_creation_function_descriptor:  # Ray's attribute name
            class_name = "Worker"

    meta = meta_from_ray_handle(FakeHandle())

    assert meta == ActorMeta("Worker", {
        "__call__": MethodMeta(), "run": MethodMeta(),
        "gen": MethodMeta(num_returns="streaming", is_generator=True),
    })


def test_gang_on_the_local_backend_is_n_actors_checked_up_front():
    ember.init(num_cpus=2)
    try:
        @ember.remote
        class Member:
            def ping(self):
                return "pong"

        gang = create_gang(Member, 2, resources_per_member={"CPU": 1})
        assert gang.placement_group is not None and gang.placement_group.wait(0)
        assert get(gang.placement_group.ready()) == gang.placement_group
        assert get([m.ping.remote() for m in gang]) == ["pong", "pong"]
        gang.shutdown()
        with pytest.raises(ResourceError, match="CPU"):
            create_gang(Member, 3, resources_per_member={"CPU": 1})
    finally:
        LeakCheck().check()
