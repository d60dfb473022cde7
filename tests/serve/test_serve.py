"""End-to-end: deployments as actors, handles, the HTTP proxy, streaming, multiplexing, faults.

HTTP goes only to 127.0.0.1 on a port the proxy picked (``port=0``). Code that runs in replicas
is defined inside each test, so it ships by value. Gates are files the test creates; replica code
waits for them with ``wait_until_exists``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import ember
from ember import serve
from ember.errors import ActorDiedError
from ember.testing import eventually
from tests.serve._support import TIMEOUT, url

pytestmark = pytest.mark.usefixtures("serve_instance")



def _wait_until_exists_by_value() -> Callable[..., Awaitable[bool]]:
    """Make ``wait_until_exists`` inside a function: cloudpickle then ships it by value with the
    replica code that calls it, as it ships the classes defined in the tests (a module-level
    function would travel by reference, and replicas would have to import this module)."""

    async def wait_until_exists(path: Path, timeout_s: float = 20) -> bool:
        """Poll until the file ``path`` exists or ``timeout_s`` pass; say whether it exists."""
        deadline = time.monotonic() + timeout_s
        while not path.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return path.exists()

    return wait_until_exists


wait_until_exists = _wait_until_exists_by_value()


@dataclass
class GatedCalls:
    """Calls that hold a replica until the test creates the file ``gate``."""

    gate: Path
    started: Path

    def deployment(self, *, wait_s: float = 20, **options: Any) -> Any:
        """A deployment (with ``options``) whose calls, over HTTP or ``handle.work.remote()``,
        create ``started``, then answer "done" once the gate exists, or "gate never opened"
        after ``wait_s``. Made inside this method, so it ships by value."""
        gate, started = self.gate, self.started

        @serve.deployment(**options)
        class Gated:
            async def __call__(self, request: Any) -> str:
                return await self.work()

            async def work(self) -> str:
                started.touch()
                opened = await wait_until_exists(gate, timeout_s=wait_s)
                return "done" if opened else "gate never opened"

        return Gated

    async def get_until_running(
        self, client: httpx.AsyncClient, target: str
    ) -> asyncio.Task[httpx.Response]:
        """Start a GET of ``target``; return its task once a replica runs the request."""
        request = asyncio.create_task(client.get(target))
        assert await wait_until_exists(self.started), "the request never reached a replica"
        return request


@pytest.fixture
def gated(tmp_path: Path) -> GatedCalls:
    return GatedCalls(tmp_path / "gate", tmp_path / "started")


def test_handle_http_and_composition() -> None:
    @serve.deployment
    def double(x: int) -> int:
        return 2 * x

    @serve.deployment(num_replicas=2, max_concurrent_queries=10)
    class Front:
        def __init__(self, doubler: Any, offset: int) -> None:
            self.doubler = doubler
            self.offset = offset

        async def __call__(self, request: Any) -> dict[str, int]:
            x = int(request.query_params["x"])
            return {"y": await self.doubler.remote(x) + self.offset}

        async def add(self, x: int) -> int:
            return await self.doubler.remote(x) + self.offset

    handle = serve.run(Front.bind(double.bind(), offset=1), port=0)
    assert handle.add.remote(20).result(timeout_s=20) == 41
    assert ember.get(ember.remote(lambda: 0).remote()) == 0  # core still usable beside serve

    status = serve.status()
    app = status.applications["default"]
    assert app.status == "RUNNING"
    assert app.deployments["Front"].replicas == 2
    assert app.deployments["double"].replicas == 1
    assert app.deployments["Front"].replica_states == {"RUNNING": 2}  # Ray's shape

    r = httpx.get(url("/anything?x=4"), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"y": 9}


def test_replica_states_count_the_replicas_still_starting() -> None:
    starting = serve.DeploymentStatus("d", "UPDATING", replicas=1, target_replicas=3)
    assert starting.replica_states == {"RUNNING": 1, "STARTING": 2}
    assert serve.DeploymentStatus("d", "UPDATING", 0, 0).replica_states == {}


def test_route_prefixes_and_delete() -> None:
    @serve.deployment
    class Name:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, request: Any) -> str:
            return f"{self.name}:{request.url.path}"

    serve.run(Name.bind("a"), name="a", route_prefix="/a", port=0)
    serve.run(Name.bind("b"), name="b", route_prefix="/b/deep", port=0)
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(url("/a/x")).text == "a:/a/x"
        assert client.get(url("/b/deep")).text == "b:/b/deep"
        assert client.get(url("/ab")).status_code == 404
        serve.delete("a")
        assert client.get(url("/a/x")).status_code == 404
        assert client.get(url("/b/deep/1")).status_code == 200
    assert set(serve.status().applications) == {"b"}


def test_options_are_validated_with_ray_names_accepted() -> None:
    d = serve.deployment(max_concurrent_queries=3, num_replicas=2,
                         graceful_shutdown_wait_loop_s=1)(lambda r: "x")
    assert d.config.max_ongoing_requests == 3
    assert d.config.graceful_shutdown_wait_loop_s == 1
    assert d.options(num_replicas=1).config.num_replicas == 1
    # Ray options ember has no use for are refused with what to do, never silently ignored.
    with pytest.raises(ValueError, match="version='1' is not supported: ember replaces"):
        serve.deployment(version="1")
    with pytest.raises(ValueError, match=r"route_prefix='a' must be a string that starts"):
        serve.deployment(route_prefix="a")
    with pytest.raises(ValueError, match=r"placement_group_bundles.*ray_actor_options"):
        serve.deployment(placement_group_bundles=[{"CPU": 1}])
    with pytest.raises(ValueError, match="max_queued_requests=-2"):
        serve.deployment(max_queued_requests=-2)
    handle = serve.get_deployment_handle("any")
    assert handle.options(use_new_handle_api=True).deployment_name == "any"
    with pytest.raises(ValueError, match="use_new_handle_api=False is not supported"):
        handle.options(use_new_handle_api=False)
    with pytest.raises(ValueError, match="unknown deployment option 'num_replica'"):
        serve.deployment(num_replica=2)
    with pytest.raises(ValueError, match="ray_actor_options may not set"):
        serve.deployment(ray_actor_options={"max_restarts": 2})
    with pytest.raises(TypeError, match="bound deployment"):
        serve.run("not an app")  # type: ignore[arg-type]


def test_constructor_failure_is_reported() -> None:
    @serve.deployment
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("no weights here")

    with pytest.raises(serve.DeploymentFailedError, match="no weights here"):
        serve.run(Broken.bind(), http=False)


def test_full_deployment_answers_503_at_once(gated: GatedCalls) -> None:
    serve.run(gated.deployment(max_ongoing_requests=1, wait_s=10).bind(), port=0)
    target = url("/")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            first = await gated.get_until_running(client, target)  # it holds the only slot
            r = await client.get(target)
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert not first.done()
            gated.gate.touch()
            assert (await first).text == "done"
            assert (await client.get(target)).text == "done"

    asyncio.run(main())


def test_streaming_http_chunks_arrive_as_produced(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    closed = tmp_path / "closed"

    @serve.deployment
    class Tokens:
        def __call__(self, request: Any) -> Any:
            from starlette.responses import StreamingResponse

            async def tokens() -> Any:
                try:
                    yield "first\n"
                    # The test opens the gate once it has read "first": a response that is
                    # not streamed never gets there, and says so instead of passing late.
                    if not await wait_until_exists(gate, timeout_s=10):
                        yield "the gate never opened: 'first' was not streamed\n"
                    for i in range(3):
                        yield f"t{i}\n"
                    if request.query_params.get("forever"):
                        for _ in range(2000):
                            yield "more\n"
                            await asyncio.sleep(0.01)
                finally:
                    closed.write_text("closed")

            return StreamingResponse(tokens(), media_type="text/plain")

    serve.run(Tokens.bind(), port=0)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            async with client.stream("GET", url("/")) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                # The generator is parked on the gate: this line can only come from streaming.
                assert await anext(lines) == "first"
                gate.touch()
                rest = [line async for line in lines]
            assert rest == ["t0", "t1", "t2"]

            closed.unlink()
            async with client.stream("GET", url("/?forever=1")) as response:
                lines = response.aiter_lines()
                assert await anext(lines) == "first"
                assert await anext(lines) == "t0"
            # The client went away mid-stream: the replica closes the generator.

    asyncio.run(main())
    eventually(closed.exists, timeout=20, what="the abandoned generator to be closed")


def test_handle_streaming_sync_and_async(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    @serve.deployment
    class Gen:
        def count(self, n: int) -> Any:
            import time

            yield 0
            for _ in range(2000):
                if gate.exists():
                    break
                time.sleep(0.005)
            else:  # the caller opens the gate once it has 0: so 0 was not streamed
                yield -1
            yield from range(1, n)

        async def acount(self, n: int) -> Any:
            for i in range(n):
                yield i * 10

    handle = serve.run(Gen.bind(), http=False)
    stream = handle.options(stream=True).count.remote(4)
    assert next(stream) == 0  # before the generator can finish: the gate is shut
    gate.touch()
    assert list(stream) == [1, 2, 3]

    async def main() -> list[int]:
        return [x async for x in handle.options(stream=True).acount.remote(3)]

    assert asyncio.run(main()) == [0, 10, 20]


def test_multiplexing_loads_once_and_routes_to_the_holder(tmp_path: Path) -> None:
    loads = tmp_path / "loads"
    loads.mkdir()

    @serve.deployment(num_replicas=2)
    class Models:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> str:
            (loads / f"{model_id}-{os.getpid()}-{len(os.listdir(loads))}").touch()
            await asyncio.sleep(0.2)
            return f"model {model_id}"

        async def __call__(self, request: Any) -> dict[str, Any]:
            model_id = serve.get_multiplexed_model_id()
            return {"model": await self.get_model(model_id), "pid": os.getpid()}

        async def which(self) -> tuple[str, int]:
            return serve.get_multiplexed_model_id(), os.getpid()

    handle = serve.run(Models.bind(), port=0)
    target = url("/")

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            replies = await asyncio.gather(*(
                client.get(target, headers={"serve_multiplexed_model_id": m})
                for m in ["a"] * 4 + ["b"] * 4
            ))
        return [r.json() for r in replies]

    replies = asyncio.run(main())
    assert [r["model"] for r in replies] == ["model a"] * 4 + ["model b"] * 4
    a_pids = {r["pid"] for r in replies[:4]}
    b_pids = {r["pid"] for r in replies[4:]}
    assert len(a_pids) == 1 and len(b_pids) == 1  # every request went where its model was
    assert a_pids != b_pids  # a new model goes to the replica with fewer models
    loaded = sorted(name.split("-")[0] for name in os.listdir(loads))
    assert loaded == ["a", "b"]  # one load per model despite four concurrent requests each

    model_id, _pid = handle.options(multiplexed_model_id="b").which.remote().result(timeout_s=20)
    assert model_id == "b"

    # The replicas report what they hold (the class was shipped by value, as a script's is),
    # so the routers keep sending each model to its holder long after they sent it there.
    from ember.serve._handle import CONTROLLER_NAME, CONTROLLER_NAMESPACE

    controller = ember.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)

    def reported() -> list[list[str]]:
        info = ember.get(controller.routing_info.remote("default", "Models", -1), timeout=20)
        return sorted(sorted(models) for models in info["models"].values())

    eventually(lambda: reported() == [["a"], ["b"]], what="the replicas to report their models")


def test_crashed_replica_fails_in_flight_requests_and_is_replaced(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    @serve.deployment(health_check_period_s=0.5)
    class Fragile:
        async def wait(self) -> str:
            return "gate" if await wait_until_exists(gate) else "never"

        def crash(self) -> None:
            os._exit(1)

        def pid(self) -> int:
            return os.getpid()

    handle = serve.run(Fragile.bind(), http=False)
    first_pid = handle.pid.remote().result(timeout_s=20)
    waiting = handle.wait.remote()
    with pytest.raises(ActorDiedError):
        handle.crash.remote().result(timeout_s=20)
    with pytest.raises(ActorDiedError):  # in flight on the crashed replica: an error, no hang
        waiting.result(timeout_s=20)

    def replaced() -> bool:
        app = serve.status().applications["default"]
        return app.deployments["Fragile"].replicas == 1 and app.status == "RUNNING"

    eventually(replaced, timeout=20, what="a replacement replica")
    assert handle.pid.remote().result(timeout_s=20) != first_pid


def test_autoscaling_follows_ongoing_requests(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    @serve.deployment(autoscaling_config={
        "min_replicas": 1, "max_replicas": 2, "target_num_ongoing_requests_per_replica": 1,
        "upscale_delay_s": 0, "downscale_delay_s": 0.5,
    })
    class Elastic:
        async def wait(self) -> str:
            return "ok" if await wait_until_exists(gate) else "never"

    handle = serve.run(Elastic.bind(), http=False)

    def replicas() -> int:
        return serve.status().applications["default"].deployments["Elastic"].replicas

    assert replicas() == 1
    pending = [handle.wait.remote() for _ in range(3)]
    eventually(lambda: replicas() == 2, timeout=20, what="a scale-up to 2 replicas")
    gate.touch()
    assert [p.result(timeout_s=20) for p in pending] == ["ok"] * 3
    eventually(lambda: replicas() == 1, timeout=20, what="a scale-down to 1 replica")


def test_user_config_reaches_reconfigure_and_redeploy_replaces() -> None:
    @serve.deployment(user_config={"threshold": 3})
    class Configured:
        def __init__(self) -> None:
            self.threshold = 0

        def reconfigure(self, config: dict[str, int]) -> None:
            self.threshold = config["threshold"]

        def get(self) -> int:
            return self.threshold

    handle = serve.run(Configured.bind(), http=False)
    assert handle.get.remote().result(timeout_s=20) == 3
    handle = serve.run(Configured.options(user_config={"threshold": 7}).bind(), http=False)
    assert handle.get.remote().result(timeout_s=20) == 7
    assert serve.status().applications["default"].deployments["Configured"].replicas == 1


def _versioned(version: int, gated: GatedCalls | None = None, **options: Any) -> Any:
    """Deployment "Versioned" answering ``f"v{version}"``; with ``gated``, its calls first
    wait at the gate (made in a function: it ships by value)."""

    @serve.deployment(name="Versioned", **options)
    class Versioned:
        async def __call__(self, request: Any) -> str:
            return await self.work()

        async def work(self) -> str:
            if gated is not None:
                gated.started.touch()
                await wait_until_exists(gated.gate)
            return f"v{version}"

    return Versioned


def test_redeploy_finishes_what_the_old_version_holds_and_then_serves_the_new(
    gated: GatedCalls,
) -> None:
    handle = serve.run(_versioned(1, gated).bind(), port=0)
    held = handle.work.remote()
    eventually(gated.started.exists, timeout=20, what="the call to reach the replica")
    handle = serve.run(_versioned(2).bind(), port=0)
    # Right after serve.run returns, every call reaches the new version: by handle, by HTTP.
    with httpx.Client(timeout=TIMEOUT) as client:
        for _ in range(5):
            assert handle.work.remote().result(timeout_s=20) == "v2"
            assert client.get(url("/")).text == "v2"
    gated.gate.touch()
    assert held.result(timeout_s=20) == "v1"  # the old replica finished it


def test_a_redeploy_that_needs_the_old_replicas_cpus_completes_and_loses_no_call() -> None:
    options = {"num_replicas": 2, "ray_actor_options": {"num_cpus": 1}}  # all of the 2 CPUs
    handle = serve.run(_versioned(1, **options).bind(), http=False)
    answers: list[str] = []
    errors: list[BaseException] = []
    stop = False

    def call_all_along() -> None:
        while not stop:
            try:
                answers.append(handle.work.remote().result(timeout_s=60))
            except BaseException as exc:
                errors.append(exc)

    caller = threading.Thread(target=call_all_along)
    caller.start()
    try:
        eventually(lambda: len(answers) > 5, timeout=20, what="calls to the first version")
        serve.run(_versioned(2, **options).bind(), http=False)
        seen = len(answers)
        eventually(lambda: len(answers) > seen + 5, timeout=20, what="calls after the redeploy")
    finally:
        stop = True
        caller.join(60)
    assert errors == []
    assert answers[0] == "v1" and answers[-1] == "v2"
    assert serve.status().applications["default"].deployments["Versioned"].replicas == 2


def test_handle_calls_beyond_the_cap_wait_for_a_slot(tmp_path: Path) -> None:
    @serve.deployment(max_ongoing_requests=1)
    class One:
        def __init__(self) -> None:
            self.running = 0

        async def work(self, i: int) -> tuple[int, int]:
            self.running += 1
            seen = self.running
            await asyncio.sleep(0.05)
            self.running -= 1
            return i, seen

    handle = serve.run(One.bind(), http=False)
    responses = [handle.work.remote(i) for i in range(4)]
    results = [r.result(timeout_s=20) for r in responses]
    assert [i for i, _ in results] == [0, 1, 2, 3]
    assert {seen for _, seen in results} == {1}  # never two at once on the replica


def test_ingress_serves_an_asgi_app() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hello(request: Request) -> JSONResponse:
        replica = request.scope["ember_serve_replica"]
        return JSONResponse({"name": request.path_params["name"], "greeting": replica.greeting})

    web = Starlette(routes=[Route("/hello/{name}", hello)])

    @serve.deployment
    @serve.ingress(web)
    class Api:
        def __init__(self) -> None:
            self.greeting = "hi"

    serve.run(Api.bind(), route_prefix="/api", port=0)
    r = httpx.get(url("/api/hello/ada"), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"name": "ada", "greeting": "hi"}
    assert httpx.get(url("/api/nope"), timeout=TIMEOUT).status_code == 404


def test_http_request_on_a_crashing_replica_gets_500_not_a_hang() -> None:
    @serve.deployment
    def fragile(request: Any) -> str:
        if request.query_params.get("crash"):
            os._exit(1)
        return "fine"

    serve.run(fragile.bind(), port=0)
    with httpx.Client(timeout=TIMEOUT) as client:
        r = client.get(url("/?crash=1"))
        assert r.status_code == 500
        assert "died" in r.text

        def answers() -> bool:
            return client.get(url("/")).text == "fine"

        eventually(answers, timeout=20, what="the replacement replica to answer")


def test_delete_lets_replicas_finish_the_calls_they_hold_then_stops_them(
    gated: GatedCalls,
) -> None:
    from ember.util.state import list_actors

    def replicas() -> int:
        return sum(a.class_name == "Replica" and a.state == "ALIVE" for a in list_actors())

    handle = serve.run(gated.deployment(num_replicas=2).bind(), port=0)
    target = url("/")
    held_call = handle.work.remote()
    eventually(gated.started.exists, timeout=20, what="the handle call to reach a replica")
    gated.started.unlink()  # made again when the HTTP request reaches one

    async def delete_while_a_request_is_held() -> httpx.Response:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            request = await gated.get_until_running(client, target)
            deleting = asyncio.create_task(asyncio.to_thread(serve.delete, "default"))
            await asyncio.sleep(0.5)
            assert not deleting.done()  # blocking: the replicas still hold two calls
            assert (await client.get(target)).status_code == 404  # out of routing at once
            gated.gate.touch()
            await deleting
            return await request

    assert asyncio.run(delete_while_a_request_is_held()).text == "done"
    assert held_call.result(timeout_s=20) == "done"
    # serve.delete returned once they were done and told to stop; the kill lands just after
    eventually(lambda: replicas() == 0, timeout=20, what="the replicas to stop")
    assert "default" not in serve.status().applications


def test_delete_of_an_idle_application_returns_at_once() -> None:
    @serve.deployment(num_replicas=2)
    def f(x: int) -> int:
        return x

    serve.run(f.bind(), http=False).remote(1).result(timeout_s=20)
    start = time.monotonic()
    serve.delete("default")
    assert time.monotonic() - start < 1.5  # not a graceful_shutdown_wait_loop_s (2 s) per replica


def test_handle_after_delete_fails_clearly() -> None:
    @serve.deployment
    def f(x: int) -> int:
        return x

    handle = serve.run(f.bind(), http=False)
    assert handle.remote(1).result(timeout_s=20) == 1
    serve.delete("default")
    with pytest.raises(serve.DeploymentUnavailableError, match="no longer exists"):
        handle.remote(2).result(timeout_s=20)


def test_failing_health_check_replaces_the_replica(tmp_path: Path) -> None:
    sick = tmp_path / "sick"

    @serve.deployment(health_check_period_s=0.1, health_check_timeout_s=5)
    class Checked:
        def check_health(self) -> None:
            if sick.exists() and sick.read_text() == str(os.getpid()):
                raise RuntimeError("feeling unwell")

        def pid(self) -> int:
            return os.getpid()

    handle = serve.run(Checked.bind(), http=False)
    first = handle.pid.remote().result(timeout_s=20)
    sick.write_text(str(first))  # only this replica turns sick

    def replaced() -> bool:
        try:
            return handle.pid.remote().result(timeout_s=20) != first
        except ActorDiedError:
            return False

    eventually(replaced, timeout=20, what="the unhealthy replica to be replaced")


def test_scaled_to_zero_comes_back_when_called() -> None:
    @serve.deployment(autoscaling_config={
        "min_replicas": 0, "max_replicas": 1, "initial_replicas": 1,
        "upscale_delay_s": 0, "downscale_delay_s": 0.2,
    })
    def sleepy(request: Any) -> str:
        return "awake"

    handle = serve.run(sleepy.bind(), port=0)

    def replicas() -> int:
        return serve.status().applications["default"].deployments["sleepy"].replicas

    eventually(lambda: replicas() == 0, timeout=20, what="a scale-down to zero")
    assert handle.remote(None).result(timeout_s=20) == "awake"  # waits, demand scales it up
    eventually(lambda: replicas() == 0, timeout=20, what="a second scale-down to zero")
    assert httpx.get(url("/"), timeout=TIMEOUT).text == "awake"  # the proxy waits too


def test_serve_works_again_after_a_runtime_restart(ember_local: dict[str, Any]) -> None:
    @serve.deployment
    def echo(x: int) -> int:
        return x

    handle = serve.run(echo.bind(), http=False)
    assert handle.remote(1).result(timeout_s=20) == 1
    ember.shutdown()  # without serve.shutdown: the next runtime starts clean
    ember.init(**ember_local)
    handle = serve.run(echo.bind(), http=False)
    assert handle.remote(2).result(timeout_s=20) == 2



def test_shutdown_twice_is_a_no_op_and_serve_starts_again_at_once() -> None:
    @serve.deployment
    def echo(x: int) -> int:
        return x

    serve.run(echo.bind(), http=False)
    serve.shutdown()
    serve.shutdown()  # as on Ray: nothing left to stop, no error
    handle = serve.run(echo.bind(), http=False)
    assert handle.remote(3).result(timeout_s=20) == 3


def test_a_timed_out_call_between_deployments_leaves_the_caller_alive(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    finished = tmp_path / "finished"

    @serve.deployment
    class Back:
        async def slow(self) -> str:
            await wait_until_exists(gate)
            finished.touch()
            return "late"

    @serve.deployment
    class Front:
        def __init__(self, back: Any) -> None:
            self.back = back

        async def impatient(self) -> str:
            try:
                return await asyncio.wait_for(self.back.slow.remote(), 0.2)
            except asyncio.TimeoutError:
                return "timed out"

        def pid(self) -> int:
            return os.getpid()

    handle = serve.run(Front.bind(Back.bind()), http=False)
    pid = handle.pid.remote().result(timeout_s=20)
    assert handle.impatient.remote().result(timeout_s=20) == "timed out"
    gate.touch()  # the abandoned reply now reaches Front
    eventually(finished.exists, timeout=20, what="the slow call to finish")
    for _ in range(5):
        assert handle.pid.remote().result(timeout_s=20) == pid  # same process, still serving


def test_client_giving_up_on_a_slow_request_leaves_the_proxy_serving(gated: GatedCalls) -> None:
    serve.run(gated.deployment().bind(), port=0)
    target = url("/")

    async def give_up() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            request = await gated.get_until_running(client, target)
            request.cancel()  # the client leaves mid-request
            with pytest.raises(asyncio.CancelledError):
                await request

    asyncio.run(give_up())
    gated.gate.touch()  # the abandoned reply now arrives at the proxy
    with httpx.Client(timeout=TIMEOUT) as client:
        for _ in range(5):
            assert client.get(target).text == "done"
    assert serve.status().applications["default"].status == "RUNNING"


def test_max_queued_requests_bounds_the_wait(gated: GatedCalls) -> None:
    gate, started = gated.gate, gated.started
    single = gated.deployment(max_ongoing_requests=1, max_queued_requests=1)
    handle = serve.run(single.bind(), port=0)
    target = url("/")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            first = await gated.get_until_running(client, target)  # it holds the only slot
            second = asyncio.create_task(client.get(target))  # waits in the proxy's queue
            await asyncio.sleep(0.3)
            third = await client.get(target)  # the queue is full
            assert third.status_code == 503
            assert third.headers["retry-after"] == "1"
            assert not second.done()
            gate.touch()
            assert [(await r).text for r in (first, second)] == ["done", "done"]

    asyncio.run(main())

    gate.unlink()
    started.unlink()
    busy = handle.work.remote()
    eventually(started.exists, timeout=20, what="the first call to start")
    queued = handle.work.remote()
    with pytest.raises(serve.BackPressureError, match="max_queued_requests=1"):
        handle.work.remote().result(timeout_s=20)
    gate.touch()
    assert [busy.result(timeout_s=20), queued.result(timeout_s=20)] == ["done", "done"]


def test_the_cap_holds_across_callers() -> None:
    # The driver's handles and the HTTP proxy route independently; the replica itself keeps
    # them together under max_ongoing_requests.
    @serve.deployment(max_ongoing_requests=1)
    class One:
        def __init__(self) -> None:
            self.running = 0
            self.most = 0

        async def work(self) -> int:
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0.3)
            self.running -= 1
            return self.most

        async def __call__(self, request: Any) -> int:
            return await self.work()

    handle = serve.run(One.bind(), port=0)

    async def calls() -> list[int]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            await client.get(url("/"))  # the proxy knows the replica before the race
            from_handle = handle.work.remote()
            replies = await asyncio.gather(client.get(url("/")), client.get(url("/")))
            return [r.json() for r in replies if r.status_code == 200] + [await from_handle]

    most = asyncio.run(calls())
    assert len(most) >= 2  # the handle's call and at least one over HTTP ran
    assert max(most) == 1


def test_oversized_bodies_and_unknown_routes_get_a_clear_4xx() -> None:
    with pytest.raises(ValueError, match="unknown http_options \\['hots'\\]"):
        serve.start(http_options={"hots": "127.0.0.1"})
    serve.start(http_options={"host": "127.0.0.1", "port": 0, "max_body_bytes": 1000})

    @serve.deployment
    async def size(request: Any) -> int:
        return len(await request.body())

    serve.run(size.bind(), route_prefix="/size", port=0)

    def chunks() -> Any:
        yield b"x" * 600
        yield b"x" * 600

    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.post(url("/size"), content=b"x" * 1000).json() == 1000
        declared = client.post(url("/size"), content=b"x" * 1001)
        assert declared.status_code == 413
        assert "max_body_bytes" in declared.text
        assert client.post(url("/size"), content=chunks()).status_code == 413  # no length
        missing = client.get(url("/nothing/here"))
        assert missing.status_code == 404
        assert "no application serves path '/nothing/here'" in missing.text


def test_chunks_leave_while_a_generator_computes_without_yielding_the_loop() -> None:
    # An LLM's forward pass blocks: the generator never awaits between tokens. Each token
    # must still reach the client when it is produced, not when the generator ends.
    @serve.deployment
    class Blocking:
        async def __call__(self, request: Any) -> Any:
            import time

            from starlette.responses import StreamingResponse

            async def tokens() -> Any:
                for i in range(3):
                    if i:
                        time.sleep(0.4)  # the "forward pass", holding the event loop
                    yield f"t{i}\n"

            return StreamingResponse(tokens(), media_type="text/plain")

    serve.run(Blocking.bind(), port=0)

    async def main() -> list[float]:
        import time

        arrivals = []
        async with httpx.AsyncClient(timeout=TIMEOUT) as client, client.stream(
            "GET", url("/")
        ) as response:
            started = time.perf_counter()
            async for _ in response.aiter_lines():
                arrivals.append(time.perf_counter() - started)
        return arrivals

    arrivals = asyncio.run(main())
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] > 0.2 and arrivals[2] - arrivals[1] > 0.2


def test_passing_a_response_to_another_call_composes_without_the_caller(tmp_path: Path) -> None:
    unpickled_in = tmp_path / "unpickled_in"

    def make_payload(value: int) -> Any:
        """A value that notes each process it is unpickled in (made here: ships by value)."""
        def rebuild(value: int) -> Any:
            import os

            with open(unpickled_in, "a") as f:
                f.write(f"{os.getpid()}\n")
            return Payload(value)

        class Payload:
            def __init__(self, value: int) -> None:
                self.value = value

            def __reduce__(self) -> Any:
                return (rebuild, (self.value,))

        return Payload(value)

    @serve.deployment
    class First:
        def make(self, x: int) -> Any:
            if x < 0:
                raise KeyError(f"no item {x}")
            return make_payload(x)

        def double(self, payload: Any) -> int:
            return 2 * payload.value

    @serve.deployment
    class Second:
        def __init__(self, first: Any) -> None:
            self.first = first

        def use(self, payload: Any, *, offset: int = 0) -> tuple[int, int]:
            return payload.value + offset, os.getpid()

        def add(self, a: Any, b: Any) -> int:
            return a.value + b.value

        async def chain(self, x: int) -> int:  # composition inside a replica
            return await self.first.double.remote(self.first.make.remote(x))

    first = serve.run(First.bind(), name="first", route_prefix=None)
    second = serve.run(Second.bind(First.bind()), name="second", route_prefix=None)
    value, second_pid = second.use.remote(first.make.remote(20), offset=1).result(timeout_s=20)
    assert value == 21
    # The payload went from the first replica to the second, never through this process.
    assert unpickled_in.read_text().split() == [str(second_pid)]
    assert second.add.remote(first.make.remote(1), b=first.make.remote(2)).result(
        timeout_s=20) == 3
    assert second.chain.remote(5).result(timeout_s=20) == 10

    # The first call's error is what the second call raises.
    with pytest.raises(KeyError, match="no item -1"):
        second.use.remote(first.make.remote(-1)).result(timeout_s=20)
    # Nested responses are refused (as in Ray), with what to do, not a hang.
    with pytest.raises(TypeError, match="top-level argument"):
        second.use.remote([first.make.remote(3)]).result(timeout_s=20)

    # The ObjectRef of a response can go to an ember task.
    ref = asyncio.run(first.make.remote(7)._to_object_ref())
    assert ember.get(ember.remote(lambda p: p.value * 2).remote(ref)) == 14
    assert ember.get(first.make.remote(8)._to_object_ref_sync()).value == 8


def test_handlers_return_json_for_mappings_like_ray() -> None:
    @serve.deployment
    def echo(request: Any) -> Any:
        import numpy as np

        kind = request.query_params.get("kind")
        if kind == "pairs":
            return (1, "two")
        if kind == "numpy":
            return {"sum": np.int64(6), "values": np.arange(3)}
        if kind == "opaque":
            return object()
        return request.query_params  # a starlette ImmutableMultiDict: a Mapping

    serve.run(echo.bind(), port=0)
    with httpx.Client(timeout=TIMEOUT) as client:
        answer = client.get(url("/?a=1&b=x"))
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"a": "1", "b": "x"}
        assert client.get(url("/?kind=pairs")).json() == [1, "two"]
        assert client.get(url("/?kind=numpy")).json() == {"sum": 6, "values": [0, 1, 2]}
        assert client.get(url("/?kind=opaque")).status_code == 500


def test_proxy_location_disabled_serves_handles_only_and_head_only_is_one_proxy() -> None:
    @serve.deployment
    def echo(x: Any) -> str:
        return "echo"

    assert serve.start(proxy_location="Disabled") is None
    handle = serve.run(echo.bind(), port=0)  # a route prefix, but no proxy to serve it on
    assert handle.remote(1).result(timeout_s=20) == "echo"
    assert serve.status().http_port is None and serve.status().proxies == {}
    serve.shutdown()

    port = serve.start(proxy_location="HeadOnly", http_options={"port": 0})
    serve.run(echo.bind(), port=0)
    assert serve.status().proxies == {"": port}  # one node: one proxy, not pinned
    assert httpx.get(url(), timeout=TIMEOUT).text == "echo"
    with pytest.raises(ValueError, match="proxy_location='Everywhere' must be one of"):
        serve.start(proxy_location="Everywhere")


def _listening_pid(port: int) -> int:
    import psutil

    [pid] = {c.pid for c in psutil.net_connections(kind="tcp")
             if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    assert pid is not None
    return int(pid)


def test_a_proxy_killed_by_the_os_serves_again_on_the_same_port() -> None:
    import signal

    @serve.deployment
    def echo(x: Any) -> str:
        return "echo"

    serve.run(echo.bind(), port=0)
    port = serve.status().http_port
    assert port is not None
    first = _listening_pid(port)
    os.kill(first, signal.SIGKILL)  # the OOM killer, say

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "echo"
        except httpx.HTTPError:
            return False

    eventually(answers, timeout=60, what="the proxy to serve again on its port")
    assert serve.status().http_port == port and serve.status().proxies == {"": port}
    assert _listening_pid(port) != first
    # The application deployed before the crash is routed by the new proxy, and so is one
    # deployed after it.
    serve.run(echo.options(name="later").bind(), name="later", route_prefix="/later", port=0)
    assert httpx.get(f"http://127.0.0.1:{port}/later", timeout=TIMEOUT).text == "echo"


def test_a_proxy_that_could_not_bind_leaves_serve_free_to_start_one_elsewhere() -> None:
    import socket

    @serve.deployment
    def echo(x: Any) -> str:
        return "echo"

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{busy}"):
            serve.run(echo.bind(), port=busy)
    serve.run(echo.bind(), port=0)  # was: no proxy, and no word of it
    assert serve.status().http_port not in (None, busy)
    assert httpx.get(url(), timeout=TIMEOUT).text == "echo"


def _alive_pids(class_name: str) -> list[int]:
    from ember.util.state import list_actors

    return sorted(a.pid for a in list_actors()
                  if a.class_name == class_name and a.state == "ALIVE")


def test_a_controller_killed_while_it_deploys_finishes_the_deploy_after_its_restart(
        tmp_path: Path) -> None:
    import signal
    import threading

    started = tmp_path / "constructing"

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
    class Slow:
        def __init__(self) -> None:
            started.touch()
            time.sleep(1.5)

        def __call__(self, request: Any = None) -> str:
            return f"slow {os.getpid()}"

    outcome: list[Any] = []
    deploying = threading.Thread(target=lambda: outcome.append(serve.run(Slow.bind(), port=0)))
    deploying.start()
    eventually(started.exists, timeout=60, what="a replica to start constructing")
    [controller] = _alive_pids("Controller")
    os.kill(controller, signal.SIGKILL)
    deploying.join(120)
    assert not deploying.is_alive() and outcome, "serve.run did not return"
    # The deploy finished on the restarted controller: two replicas, none left over from the
    # one that died (a replica it asked for but never recorded is stopped).
    eventually(lambda: len(_alive_pids("Replica")) == 2, timeout=60,
               what="exactly the two replicas of the deployment")
    answers = {httpx.get(url(), timeout=TIMEOUT).text for _ in range(20)}
    assert answers <= {f"slow {pid}" for pid in _alive_pids("Replica")}
    assert serve.status().applications["default"].deployments["Slow"].status == "HEALTHY"
    time.sleep(1)  # stays at two
    assert len(_alive_pids("Replica")) == 2


def test_ember_get_and_wait_take_deployment_responses_as_ray_2_5_handles_gave_refs() -> None:
    """Ray 2.5's serve.run gave a handle whose .remote() returned an ObjectRef: programs call
    ray.get(handle.remote(x)) and ray.get([...]); those run here with ember in place of ray."""

    @serve.deployment
    class Slow:
        async def __call__(self, x: int, delay: float = 0.0) -> int:
            await asyncio.sleep(delay)
            return x * 2

    handle = serve.run(Slow.bind(), port=0)
    assert ember.get(handle.remote(3)) == 6
    assert ember.get([handle.remote(i) for i in range(4)] + [ember.put("ref")]) == [
        0, 2, 4, 6, "ref"]
    with pytest.raises(ember.errors.GetTimeoutError):
        ember.get(handle.remote(1, delay=5), timeout=0.2)
    slow, fast = handle.remote(1, delay=5), handle.remote(2)
    ready, not_ready = ember.wait([slow, fast], num_returns=1, timeout=10)
    assert ready == [fast] and not_ready == [slow]
    assert fast.result() == 4  # the response is still itself


def test_a_route_prefix_on_the_ingress_deployment_is_where_http_reaches_it() -> None:
    @serve.deployment(route_prefix="/hello")
    def hello(request: Any) -> str:
        return f"hello at {request.url.path}"

    @serve.deployment
    class Greeter:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, request: Any) -> str:
            return "greeter"

    serve.run(hello.bind(), name="hello", port=0)
    serve.run(Greeter.options(route_prefix="/greet").bind(hello.options(route_prefix=None)
                                                          .bind()), name="greet", port=0)
    serve.run(hello.options(name="other").bind(), name="over", route_prefix="/override",
              port=0)
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(url("/hello/x")).text == "hello at /hello/x"
        assert client.get(url("/greet")).text == "greeter"
        assert client.get(url("/override")).text == "hello at /override"  # serve.run's wins
        assert client.get(url("/")).status_code == 404
    assert serve.status().applications["hello"].route_prefix == "/hello"
    with pytest.raises(ValueError, match=r"deployment 'hello' sets route_prefix='/hello' but "
                                         r"is not the ingress"):
        serve.run(Greeter.bind(hello.bind()), name="bad", port=0)


def test_ray_2_5_deprecated_deploy_get_handle_get_deployment_and_list_deployments(
        caplog: pytest.LogCaptureFixture) -> None:
    @serve.deployment
    class Counter:
        def __init__(self, start: int) -> None:
            self.value = start

        def __call__(self, request: Any = None) -> int:
            self.value += 1
            return self.value

    serve.start(http_options={"port": 0})
    with caplog.at_level("WARNING", logger="ember.serve"):
        Counter.deploy(10)  # an application of its own, on HTTP at /Counter as in Ray 2.5
    assert "Deployment.deploy() is deprecated" in caplog.text
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(url("/Counter")).json() == 11
    assert ember.get(Counter.get_handle().remote()) == 12
    assert list(serve.list_deployments()) == ["Counter"]
    deployed = serve.get_deployment("Counter")
    assert deployed.name == "Counter"
    assert deployed.get_handle().remote().result(timeout_s=20) == 13
    assert "serve.get_deployment() is deprecated" in caplog.text
    serve.delete("Counter")
    assert serve.list_deployments() == {}
    with pytest.raises(KeyError, match="no deployment named 'Counter'"):
        serve.get_deployment("Counter")
