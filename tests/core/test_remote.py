"""``ember/core/_remote.py``: ``@ember.remote`` functions, actor classes and their handles."""

from __future__ import annotations

import pickle

import pytest

import ember
from ember.errors import ResourceError


def test_remote_function_cannot_be_called_directly():
    @ember.remote
    def step(x):
        return x

    with pytest.raises(TypeError, match=r"use .*step\.remote\(\.\.\.\)"):
        step(1)


def test_actor_class_cannot_be_instantiated_directly():
    @ember.remote
    class Model:
        pass

    with pytest.raises(TypeError, match=r"use .*Model\.remote\(\.\.\.\)"):
        Model()


def test_decorator_with_a_positional_option_is_refused():
    with pytest.raises(TypeError, match=r"@ember.remote\(num_cpus=1\)"):
        ember.remote(1, num_cpus=2)


def test_decorator_keeps_the_docstring_and_the_function():
    def documented(x):
        """Adds one."""
        return x + 1

    remote_fn = ember.remote(documented)

    assert remote_fn.__doc__ == "Adds one."
    assert remote_fn.__wrapped__ is documented
    assert "documented" in repr(remote_fn)


def test_options_returns_a_copy_and_leaves_the_original_alone(ember_local):
    @ember.remote(num_cpus=1)
    def step():
        return 1

    too_big = step.options(num_cpus=3)

    with pytest.raises(ResourceError):
        ember.get(too_big.remote(), timeout=30)
    with pytest.raises(ResourceError):
        ember.get(too_big.options(max_retries=0).remote(), timeout=30)  # options accumulate
    assert ember.get(step.remote(), timeout=30) == 1


def test_variants_made_with_options_share_the_shipped_code():
    @ember.remote
    def step():
        return 1

    assert step.options(num_cpus=2).function_id == step.function_id


def test_generator_functions_stream_by_default():
    @ember.remote
    def stream():
        yield 1

    @ember.remote
    async def astream():
        yield 1

    @ember.remote
    def plain():
        return 1

    assert stream._options["num_returns"] == "streaming"
    assert astream._options["num_returns"] == "streaming"
    assert plain._options["num_returns"] == 1


def test_remote_function_pickles_with_its_identity():
    @ember.remote(num_cpus=0.5)
    def step(x):
        return x * 3

    copy = pickle.loads(pickle.dumps(step))

    assert copy.function_id == step.function_id
    assert copy._options["num_cpus"] == 0.5
    assert copy.__wrapped__(2) == 6


def test_recursive_remote_function_can_be_pickled():
    """A remote function that calls itself (``fib.remote(n - 1)``) must ship to a worker."""

    @ember.remote
    def fib(n):
        return n if n < 2 else fib.remote(n - 1)

    copy = pickle.loads(pickle.dumps(fib))

    assert copy.function_id == fib.function_id


def test_actor_class_metadata_describes_its_methods():
    @ember.remote
    class Service:
        def plain(self):
            return 1

        def stream(self):
            yield 1

        async def coro(self):
            return 1

        @ember.method(num_returns=2)
        def pair(self):
            return 1, 2

        def __call__(self):
            return "called"

        def __repr__(self):
            return "Service()"

    meta = Service.meta

    assert meta.is_async
    assert meta.methods["plain"].num_returns == 1
    assert meta.methods["stream"].num_returns == "streaming"
    assert meta.methods["stream"].is_generator
    assert meta.methods["coro"].is_async
    assert meta.methods["pair"].num_returns == 2
    assert "__call__" in meta.methods
    assert "__repr__" not in meta.methods


def test_sync_actor_is_not_async():
    @ember.remote
    class Plain:
        def run(self):
            return 1

    assert not Plain.meta.is_async


def test_handle_names_the_known_methods_on_a_typo(ember_local):
    @ember.remote
    class Service:
        def predict(self, x):
            return x

        def reload(self):
            return None

    handle = Service.remote()

    with pytest.raises(AttributeError, match=r"has no method 'predcit' \(methods: predict, reload\)"):
        handle.predcit  # noqa: B018


def test_actor_method_cannot_be_called_directly(ember_local):
    @ember.remote
    class Service:
        def predict(self, x):
            return x

    with pytest.raises(TypeError, match=r"use \.predict\.remote\(\)"):
        Service.remote().predict(1)


def test_method_options_override_num_returns_per_call(ember_local):
    @ember.remote
    class Service:
        def pair(self):
            return "a", "b"

    first, second = Service.remote().pair.options(num_returns=2).remote()

    assert ember.get([first, second], timeout=30) == ["a", "b"]


def test_handles_to_one_actor_are_equal_and_hash_alike(ember_local):
    @ember.remote
    class Service:
        def ping(self):
            return "pong"

    handle = Service.options(name="svc").remote()
    found = ember.get_actor("svc")
    other = Service.remote()

    assert found == handle and hash(found) == hash(handle)
    assert other != handle
    assert "Service" in repr(handle)


def test_get_if_exists_without_a_name_is_refused_before_anything_starts():
    @ember.remote
    class Service:
        pass

    with pytest.raises(ValueError, match=r"get_if_exists=True on .*Service needs a name"):
        Service.options(num_cpus=1, get_if_exists=True).remote()
    assert not ember.is_initialized()


def test_runtime_context_names_the_call_and_its_resources_and_hands_out_the_actor(
        ember_local):
    @ember.remote
    def name_and_resources():
        ctx = ember.get_runtime_context()
        return ctx.get_task_name(), ctx.get_assigned_resources()

    @ember.remote
    class Echo:
        def context(self):
            ctx = ember.get_runtime_context()
            return ctx.get_task_name(), ctx.get_assigned_resources()

        def via_self(self, s):
            return ember.get_runtime_context().current_actor.echo.remote(s)

        def echo(self, s):
            return s

    assert ember.get(name_and_resources.options(name="named").remote(), timeout=30) == (
        "named", {"CPU": 1.0})
    assert ember.get(name_and_resources.options(num_cpus=2).remote(), timeout=30)[1] == {
        "CPU": 2.0}
    # Ray's names: Class.method; an actor without num_cpus holds no CPU while it runs.
    assert ember.get(Echo.remote().context.remote(), timeout=30) == ("Echo.context", {})
    assert ember.get(Echo.options(num_cpus=1).remote().context.remote(), timeout=30)[1] == {
        "CPU": 1.0}
    assert ember.get(ember.get(Echo.remote().via_self.remote("hi"), timeout=30),
                     timeout=30) == "hi"
