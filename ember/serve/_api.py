"""``serve.run``, ``serve.delete``, ``serve.status``, ``serve.shutdown``: the driver's side."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ember
from ember.dag import DAGNode
from ember.errors import ActorDiedError, EmberError
from ember.serve import _handle
from ember.serve._controller import Controller
from ember.serve._deployment import UNSET, Application, Deployment, replace_applications
from ember.serve._handle import CONTROLLER_NAME, CONTROLLER_NAMESPACE, DeploymentHandle
from ember.serve._keeper import KEEPER_NAME, Keeper
from ember.serve._logging import LoggingConfig
from ember.serve._proxy_policy import proxy_nodes
from ember.serve.config import HTTPOptions, ProxyLocation, gRPCOptions

DEPLOY_TIMEOUT_S = 120.0

# Deployment name -> (the Deployment, its application) for what this process deployed: Ray
# 2.5's deprecated serve.get_deployment and serve.list_deployments read it.
_deployed: dict[str, tuple[Deployment, str]] = {}


def deprecated(what: str, instead: str) -> None:
    """Log (on the ``ember.serve`` logger, once per call) that a Ray 2.5 API is deprecated."""
    logging.getLogger("ember.serve").warning(
        "%s is deprecated (as in Ray 2.5) and will be removed; use %s", what, instead)


@dataclass(frozen=True)
class DeploymentStatus:
    """One deployment in ``serve.status()``: ``name``, ``status`` (``"UPDATING"``,
    ``"HEALTHY"`` or ``"DEPLOY_FAILED"``), running ``replicas``, ``target_replicas``, and a
    ``message`` saying what failed.
    """
    name: str
    status: str  # "UPDATING" | "HEALTHY" | "DEPLOY_FAILED"
    replicas: int
    target_replicas: int
    message: str = ""

    @property
    def replica_states(self) -> dict[str, int]:
        """How many replicas are in each state, as Ray's ``replica_states``:
        ``{"RUNNING": n}``, plus ``"STARTING"`` for those still missing to reach the target
        (states with no replica are left out)."""
        states = {"RUNNING": self.replicas, "STARTING": self.target_replicas - self.replicas}
        return {state: count for state, count in states.items() if count > 0}


@dataclass(frozen=True)
class ApplicationStatus:
    """One application in ``serve.status()``: ``status`` (``"DEPLOYING"``, ``"RUNNING"`` or
    ``"DEPLOY_FAILED"``), ``route_prefix`` (``None``: not on HTTP) and its ``deployments`` by
    name.
    """
    status: str  # "DEPLOYING" | "RUNNING" | "DEPLOY_FAILED"
    route_prefix: str | None
    deployments: dict[str, DeploymentStatus] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeStatus:
    """What ``serve.status()`` returns: the running ``applications`` by name; ``http_port``, the
    main HTTP proxy's port (on the head node with ``HeadOnly``; ``None`` when no proxy runs);
    ``proxies``: node id -> the port of the proxy on that node."""

    applications: dict[str, ApplicationStatus] = field(default_factory=dict)
    http_port: int | None = None
    proxies: dict[str, int] = field(default_factory=dict)


class DeploymentFailedError(EmberError, RuntimeError):
    """An application's replicas could not start (their constructor raised)."""


def _controller(create: bool) -> Any:
    controller = _named(CONTROLLER_NAME)
    if controller is not None or not create:
        return controller
    # The keeper owns replicas and proxies and keeps the controller's checkpoint, so that the
    # controller may die and restart (max_restarts=-1; calls in flight are sent again) while
    # they keep serving. Both fate-share with this driver, as serve does.
    ember.remote(Keeper).options(name=KEEPER_NAME, namespace=CONTROLLER_NAMESPACE,
                                 num_cpus=0, max_concurrency=100, get_if_exists=True).remote()
    controller = ember.remote(Controller).options(
        name=CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE, max_concurrency=10_000,
        max_restarts=-1, max_task_retries=-1,
    ).remote()
    ember.get(controller.start.remote())
    return controller


_default_logging_config: LoggingConfig | None = None


def _start_proxies(controller: Any, host: str, port: int, options: dict[str, Any] | None,
                   location: str) -> int | None:
    nodes = proxy_nodes(location, ember.nodes(), ember.get_runtime_context().get_node_id())
    port_bound: int | None = ember.get(
        controller.start_proxy.remote(host, port, options, nodes, location))
    return port_bound


def _location_name(location: Any) -> str:
    name = str(getattr(location, "value", location))
    return "Disabled" if name == "NoServer" else name  # Ray's older DeploymentMode spelling


def start(
    proxy_location: ProxyLocation | str | None = None,
    http_options: HTTPOptions | dict[str, Any] | None = None,
    grpc_options: gRPCOptions | dict[str, Any] | None = None,
    logging_config: LoggingConfig | dict[str, Any] | None = None,
    **kwargs: Any,
) -> int | None:
    """Start serve (controller and HTTP proxies) if it is not running; returns the main HTTP
    proxy's port (None with ``proxy_location="Disabled"``).

    ``proxy_location`` (Ray's): ``"HeadOnly"`` (default) runs one proxy, on the head node, so
    that a client on the head reaches it at ``host:port``; ``"EveryNode"`` runs one on every
    node, nodes that join later included (``serve.status().proxies`` lists their ports);
    ``"Disabled"`` runs none (handles only). A proxy that dies starts again on its port. ``http_options`` (an ``HTTPOptions`` or a dict of its fields): ``host``
    (default 127.0.0.1: only the proxy's own machine can connect; pass ``"0.0.0.0"`` to accept
    connections from other machines, see the README's security notes), ``port`` (default 8000;
    0 picks a free one), the limits on what clients send (``max_body_bytes``: 413;
    ``max_header_bytes``, ``max_headers``, ``max_request_head_bytes``: 431) and
    ``show_error_details``. ``logging_config`` is the default of the deployments deployed after
    this call. ``grpc_options`` are accepted only when they ask for no gRPC service (ember
    serves HTTP).
    """
    global _default_logging_config
    unknown = sorted(set(kwargs) - {"detached"})  # Ray's old flag: serve outlives nothing here
    if unknown:
        raise TypeError(f"serve.start() got unknown arguments {unknown}")
    options = HTTPOptions.from_any(http_options)
    if isinstance(grpc_options, dict):
        gRPCOptions(**grpc_options)  # refuses what ember cannot do
    if logging_config is not None:
        _default_logging_config = LoggingConfig.from_any(logging_config)
    location = _location_name(proxy_location if proxy_location is not None
                              else options.location or "HeadOnly")
    proxy_nodes(location, [], "")  # an unknown location raises before anything starts
    controller = _controller(create=True)
    return _start_proxies(controller, options.host, options.port, options.proxy_options(),
                          location)


def run(
    target: Application | Deployment, *, name: str = "default", route_prefix: str | None = UNSET,
    host: str = "127.0.0.1", port: int = 8000, blocking: bool = False, http: bool = True,
    logging_config: LoggingConfig | dict[str, Any] | None = None,
    _blocking_poll_s: float = 1.0,
) -> DeploymentHandle:
    """Deploy an application and return a handle to its ingress deployment.

    Waits until every replica is up. With ``route_prefix`` (default: the ingress deployment's
    own ``route_prefix`` if it has one, else ``"/"``; ``None``: no HTTP) the application
    also answers HTTP on ``host:port`` (``port=0`` picks a free port; ``serve.status().http_port``
    says which), through the proxy on the head node unless ``serve.start`` chose another
    ``proxy_location``. ``blocking=True`` then serves until interrupted. ``logging_config``
    applies to each deployment of the application that does not set its own.
    """
    if isinstance(target, Deployment):
        target = target.bind()
    if isinstance(target, DAGNode):
        raise TypeError(
            f"serve.run takes a bound deployment, got the graph node {target!r}; run a "
            "deployment graph through its driver: serve.run(DAGDriver.bind(graph)) "
            "(from ember.serve.drivers import DAGDriver)"
        )
    if not isinstance(target, Application):
        raise TypeError(
            f"serve.run takes a bound deployment (MyDeployment.bind(...)), got {target!r}"
        )
    if route_prefix is UNSET:  # Ray 2.5: the ingress deployment's own, else "/"
        own = target.deployment.route_prefix
        route_prefix = "/" if own is UNSET else own
    if route_prefix is not None and not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix={route_prefix!r} must start with '/'")
    controller = _controller(create=True)
    if http and route_prefix is not None:  # HeadOnly unless serve.start chose otherwise
        _start_proxies(controller, host, port, None, "HeadOnly")
    apps = target.walk()
    for app in apps:
        if app is not target and app.deployment.route_prefix not in (UNSET, None):
            raise ValueError(
                f"deployment {app.deployment.name!r} sets route_prefix="
                f"{app.deployment.route_prefix!r} but is not the ingress of application "
                f"{name!r} (the deployment given to serve.run, {target.deployment.name!r}); "
                "only the ingress answers HTTP: remove its route_prefix"
            )
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

    app_logging = (LoggingConfig.from_any(logging_config) if logging_config is not None
                   else _default_logging_config)
    specs = []
    nodes: dict[int, Any] = {}  # graph nodes copied with handles: one copy each
    for app in apps:
        args = replace_applications(app.args, as_handle, nodes)
        kwargs = replace_applications(app.kwargs, as_handle, nodes)
        config = app.deployment.config
        if config.logging_config is None and app_logging is not None:
            config = dataclasses.replace(config, logging_config=app_logging)
        specs.append((names[id(app)], app.deployment.func_or_class, args, kwargs, config))
    ingress = names[id(target)]
    ember.get(controller.deploy.remote(name, route_prefix, ingress, specs))
    outcome = ember.get(controller.wait_healthy.remote(name, DEPLOY_TIMEOUT_S))
    if outcome.startswith("DEPLOY_FAILED"):
        raise DeploymentFailedError(f"application {name!r} failed to deploy: {outcome[15:]}")
    if outcome != "RUNNING":
        raise TimeoutError(f"application {name!r} was not running after {DEPLOY_TIMEOUT_S} s")
    _handle.refresh_app(name)  # a redeploy: this process's next call reaches the new version
    for app in apps:
        _deployed[names[id(app)]] = (app.deployment, name)
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
    """A handle to deployment ``deployment_name`` of application ``app_name``, for calls from
    Python (in the driver, or in another deployment's replica).

    ::

        serve.run(Pipeline.bind(Model.bind()), name="nlp")
        model = serve.get_deployment_handle("Model", app_name="nlp")
        model.remote("a sentence").result()
    """
    return DeploymentHandle(deployment_name, app_name)


def handle_of(deployment_name: str) -> DeploymentHandle:
    """A handle to the running deployment of that name (in the application this process
    deployed it in, else the first application that has one)."""
    known = _deployed.get(deployment_name)
    if known is not None:
        return DeploymentHandle(deployment_name, known[1])
    for app_name, app in status().applications.items():
        if deployment_name in app.deployments:
            return DeploymentHandle(deployment_name, app_name)
    raise ValueError(f"no deployment named {deployment_name!r} is running; deploy it with "
                     "serve.run(...) first")


def get_deployment(name: str) -> Deployment:
    """Deprecated (Ray 2.5): the deployment ``name`` that this process deployed, running now
    (its ``.get_handle()`` reaches it). Use ``serve.get_deployment_handle(name, app_name)``."""
    deprecated("serve.get_deployment()", "serve.get_deployment_handle(name, app_name)")
    running = list_deployments(_notice=False)
    if name not in running:
        raise KeyError(f"no deployment named {name!r} deployed from this process is running "
                       f"(running: {sorted(running)})")
    return running[name]


def list_deployments(*, _notice: bool = True) -> dict[str, Deployment]:
    """Deprecated (Ray 2.5): the running deployments this process deployed, by name. Use
    ``serve.status()``."""
    if _notice:
        deprecated("serve.list_deployments()", "serve.status()")
    apps = status().applications
    return {name: dep for name, (dep, app) in _deployed.items()
            if app in apps and name in apps[app].deployments}


def delete(name: str, *, _blocking: bool = True) -> None:
    """Stop an application and all its replicas.

    The application leaves routing at once (its route answers 404, its handles raise
    ``DeploymentUnavailableError``); its replicas finish the calls they hold, each for at most
    its ``graceful_shutdown_timeout_s``, then stop. ``_blocking=True`` (Ray's default) returns
    once they are done and have been told to stop."""
    controller = _controller(create=False)
    if controller is not None:
        ember.get(controller.delete.remote(name))
    _handle.forget_app(name)
    if controller is not None and _blocking:
        ember.get(controller.wait_deleted.remote(name, DEPLOY_TIMEOUT_S))
    for deployment_name, (_, app) in list(_deployed.items()):
        if app == name:
            del _deployed[deployment_name]


def status() -> ServeStatus:
    """The state of serve: each application's status and its deployments' replica counts, and
    the HTTP port (an empty ``ServeStatus`` when serve is not running).

    ::

        serve.run(app, port=0)
        status = serve.status()
        print(status.http_port, status.applications["default"].status)   # ... RUNNING
    """
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


def _named(name: str) -> Any:
    """serve's actor of that name, or None."""
    try:
        return ember.get_actor(name, namespace=CONTROLLER_NAMESPACE)
    except ValueError:
        return None


def _wait_until_gone(name: str) -> None:
    """``ember.kill`` returns before the actor is gone: wait until its name is free, so that
    a second shutdown is a no-op and a serve.run right after starts afresh."""
    deadline = time.monotonic() + 10
    while _named(name) is not None and time.monotonic() < deadline:
        time.sleep(0.01)


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
        _wait_until_gone(CONTROLLER_NAME)
    keeper = _named(KEEPER_NAME)
    if keeper is not None:  # and with it anything of serve's still running
        ember.kill(keeper)
        _wait_until_gone(KEEPER_NAME)
    _handle.forget_clients()
    _deployed.clear()
