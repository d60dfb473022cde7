"""``serve.run``, ``serve.delete``, ``serve.status``, ``serve.shutdown``: the driver's side."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ember
from ember.errors import ActorDiedError
from ember.serve import _handle
from ember.serve._controller import Controller
from ember.serve._deployment import Application, Deployment, replace_applications
from ember.serve._handle import CONTROLLER_NAME, CONTROLLER_NAMESPACE, DeploymentHandle

DEPLOY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    status: str  # "UPDATING" | "HEALTHY" | "DEPLOY_FAILED"
    replicas: int
    target_replicas: int
    message: str = ""


@dataclass(frozen=True)
class ApplicationStatus:
    status: str  # "DEPLOYING" | "RUNNING" | "DEPLOY_FAILED"
    route_prefix: str | None
    deployments: dict[str, DeploymentStatus] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeStatus:
    """``http_port``: the main HTTP proxy's port (on the head node with ``HeadOnly``);
    ``proxies``: node id -> the port of the proxy on that node."""

    applications: dict[str, ApplicationStatus] = field(default_factory=dict)
    http_port: int | None = None
    proxies: dict[str, int] = field(default_factory=dict)


class DeploymentFailedError(RuntimeError):
    """An application's replicas could not start (their constructor raised)."""


def _controller(create: bool) -> Any:
    try:
        return ember.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    except ValueError:
        if not create:
            return None
    controller = ember.remote(Controller).options(
        name=CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE, max_concurrency=10_000,
    ).remote()
    ember.get(controller.start.remote())
    return controller


HTTP_OPTIONS = {"host": "127.0.0.1", "port": 8000, "max_body_bytes": 100 * 2**20}
PROXY_LOCATIONS = ("HeadOnly", "EveryNode", "Disabled")


def proxy_nodes(location: str, nodes: list[dict[str, Any]], driver_node: str
                ) -> list[str | None]:
    """The nodes that get an HTTP proxy (``None``: one proxy, wherever; there is one node)."""
    if location not in PROXY_LOCATIONS:
        raise ValueError(f"proxy_location={location!r} must be one of "
                         f"{', '.join(map(repr, PROXY_LOCATIONS))}")
    if location == "Disabled":
        return []
    if len(nodes) <= 1:
        return [None]
    if location == "EveryNode":
        heads = sorted(nodes, key=lambda n: not n.get("IsHead"))  # the head's proxy first
        return [str(n["NodeID"]) for n in heads]
    head = next((n["NodeID"] for n in nodes if n.get("IsHead")), driver_node)
    return [str(head)]


def _start_proxies(controller: Any, host: str, port: int, max_body_bytes: int | None,
                   location: str) -> int | None:
    nodes = proxy_nodes(location, ember.nodes(), ember.get_runtime_context().get_node_id())
    return ember.get(controller.start_proxy.remote(
        host, port, max_body_bytes, nodes, location))


def start(*, proxy_location: str = "HeadOnly",
          http_options: dict[str, Any] | None = None) -> int | None:
    """Start serve (controller and HTTP proxies) if it is not running; returns the main HTTP
    proxy's port (None with ``proxy_location="Disabled"``).

    ``proxy_location`` (Ray's): ``"HeadOnly"`` (default) runs one proxy, on the head node, so
    that a client on the head reaches it at ``host:port``; ``"EveryNode"`` runs one on every
    node alive now (``serve.status().proxies`` lists their ports); ``"Disabled"`` runs none
    (handles only). ``http_options``: ``host`` (default 127.0.0.1: only the proxy's own machine
    can connect; pass ``"0.0.0.0"`` to accept connections from other machines, see the README's
    security notes), ``port`` (default 8000; 0 picks a free one), ``max_body_bytes`` (default
    100 MiB: a larger request body gets 413).
    """
    unknown = set(http_options or {}) - set(HTTP_OPTIONS)
    if unknown:
        raise ValueError(f"unknown http_options {sorted(unknown)}; known: "
                         f"{', '.join(sorted(HTTP_OPTIONS))}")
    options = {**HTTP_OPTIONS, **(http_options or {})}
    if not isinstance(options["max_body_bytes"], int) or options["max_body_bytes"] < 0:
        raise ValueError(f"max_body_bytes={options['max_body_bytes']!r} must be an integer >= 0")
    if proxy_location not in PROXY_LOCATIONS:
        proxy_nodes(proxy_location, [], "")  # raises, naming the known locations
    controller = _controller(create=True)
    return _start_proxies(controller, options["host"], options["port"],
                          options["max_body_bytes"], proxy_location)


def run(
    target: Application | Deployment, *, name: str = "default", route_prefix: str | None = "/",
    host: str = "127.0.0.1", port: int = 8000, blocking: bool = False, http: bool = True,
    _blocking_poll_s: float = 1.0,
) -> DeploymentHandle:
    """Deploy an application and return a handle to its ingress deployment.

    Waits until every replica is up. With ``route_prefix`` (default ``"/"``) the application
    also answers HTTP on ``host:port`` (``port=0`` picks a free port; ``serve.status().http_port``
    says which), through the proxy on the head node unless ``serve.start`` chose another
    ``proxy_location``. ``blocking=True`` then serves until interrupted.
    """
    if isinstance(target, Deployment):
        target = target.bind()
    if not isinstance(target, Application):
        raise TypeError(
            f"serve.run takes a bound deployment (MyDeployment.bind(...)), got {target!r}"
        )
    if route_prefix is not None and not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix={route_prefix!r} must start with '/'")
    controller = _controller(create=True)
    if http and route_prefix is not None:  # HeadOnly unless serve.start chose otherwise
        _start_proxies(controller, host, port, None, "HeadOnly")
    apps = target.walk()
    names: dict[int, str] = {}  # a deployment bound twice gets a numbered second name
    for app in apps:
        base, n = app.deployment.name, 1
        candidate = base
        while candidate in names.values():
            n += 1
            candidate = f"{base}_{n}"
        names[id(app)] = candidate

    def as_handle(bound: Application) -> DeploymentHandle:
        return DeploymentHandle(names[id(bound)], name)

    specs = []
    for app in apps:
        args = replace_applications(app.args, as_handle)
        kwargs = replace_applications(app.kwargs, as_handle)
        specs.append((names[id(app)], app.deployment.func_or_class, args, kwargs,
                      app.deployment.config))
    ingress = names[id(target)]
    ember.get(controller.deploy.remote(name, route_prefix, ingress, specs))
    outcome = ember.get(controller.wait_healthy.remote(name, DEPLOY_TIMEOUT_S))
    if outcome.startswith("DEPLOY_FAILED"):
        raise DeploymentFailedError(f"application {name!r} failed to deploy: {outcome[15:]}")
    if outcome != "RUNNING":
        raise TimeoutError(f"application {name!r} was not running after {DEPLOY_TIMEOUT_S} s")
    handle = DeploymentHandle(ingress, name)
    if blocking:
        try:
            while True:
                time.sleep(_blocking_poll_s)
        except KeyboardInterrupt:
            pass
    return handle


def get_app_handle(name: str = "default") -> DeploymentHandle:
    """A handle to a running application's ingress deployment."""
    app = status().applications.get(name)
    controller = _controller(create=False)
    if app is None or controller is None:
        raise ValueError(f"no application named {name!r} is running")
    ingress = ember.get(controller.ingress_of.remote(name))
    return DeploymentHandle(ingress, name)


def get_deployment_handle(deployment_name: str, app_name: str = "default") -> DeploymentHandle:
    return DeploymentHandle(deployment_name, app_name)


def delete(name: str, *, _blocking: bool = True) -> None:
    """Stop an application and all its replicas."""
    controller = _controller(create=False)
    if controller is not None:
        ember.get(controller.delete.remote(name))
    _handle.forget_app(name)


def status() -> ServeStatus:
    controller = _controller(create=False)
    if controller is None:
        return ServeStatus()
    raw = ember.get(controller.status.remote())
    port = ember.get(controller.proxy_port.remote())
    proxies = ember.get(controller.proxy_ports.remote())
    apps = {
        name: ApplicationStatus(
            app["status"], app["route_prefix"],
            {d: DeploymentStatus(d, **info) for d, info in app["deployments"].items()},
        )
        for name, app in raw.items()
    }
    return ServeStatus(apps, port, proxies)


def shutdown() -> None:
    """Stop every application, the HTTP proxy and the controller."""
    controller = _controller(create=False)
    if controller is not None:
        try:
            ember.get(controller.shutdown.remote(), timeout=30)
        except ActorDiedError:
            pass  # killed by an earlier shutdown whose kill has not landed yet: nothing to stop
        finally:
            ember.kill(controller)
        # ember.kill returns before the actor is gone; wait until its name is free, so that a
        # second shutdown is a no-op and a serve.run right after starts a fresh controller.
        deadline = time.monotonic() + 10
        while _controller(create=False) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
    _handle.forget_clients()
