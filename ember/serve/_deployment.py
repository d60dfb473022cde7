"""``@serve.deployment``, ``.bind()`` and ``@serve.ingress``: what an application is made of."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ember.dag import DAGNode
from ember.serve._autoscaling import AutoscalingConfig
from ember.serve._logging import LoggingConfig

# Ray 2.5 spellings accepted as they are, mapped to ours.
_ALIASES = {"max_concurrent_queries": "max_ongoing_requests"}
# Ray options ember does not have, each with what to do instead (an option that would be
# accepted and then ignored is worse than an error).
_REJECTED = {
    "version": "ember replaces every replica on redeploy (Ray 2.60 removed the option too); "
               "remove it",
    "is_driver_deployment": "it is internal to Ray; remove it",
    "placement_group_bundles": "ember places each replica alone; ask for its resources with "
                               "ray_actor_options={'num_cpus': ..., 'num_gpus': ...}",
    "placement_group_strategy": "ember places each replica alone; ask for its resources with "
                                "ray_actor_options={'num_cpus': ..., 'num_gpus': ...}",
}
_ACTOR_OPTION_KEYS = {"num_cpus", "num_gpus", "resources", "memory", "runtime_env",
                      "scheduling_strategy"}


@dataclass(frozen=True)
class DeploymentConfig:
    """A deployment's settings, as ``@serve.deployment(...)`` and ``.options(...)`` take them:
    ``num_replicas`` (or ``autoscaling_config``), ``max_ongoing_requests`` per replica,
    ``max_queued_requests`` per caller, ``ray_actor_options`` (``num_cpus``, ``num_gpus``,
    ``resources``, ...), ``user_config``, health checks, graceful shutdown and
    ``logging_config``. Invalid values raise ``ValueError`` when the config is made.

    >>> DeploymentConfig(num_replicas=2, ray_actor_options={"num_cpus": 0.5}).start_replicas
    2
    """
    num_replicas: int = 1
    max_ongoing_requests: int = 100
    autoscaling_config: AutoscalingConfig | None = None
    ray_actor_options: dict[str, Any] = field(default_factory=dict)
    user_config: Any = None
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    graceful_shutdown_timeout_s: float = 20.0
    graceful_shutdown_wait_loop_s: float = 0.1
    # Calls one caller (a handle's process, or the HTTP proxy) may hold waiting for a free
    # replica; past that, handles raise BackPressureError and HTTP answers 503 + Retry-After.
    # -1 (default): handles wait without bound, HTTP answers 503 at once (no queue).
    max_queued_requests: int = -1
    logging_config: LoggingConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_replicas, int) or self.num_replicas < 0:
            raise ValueError(f"num_replicas={self.num_replicas!r} must be an integer >= 0")
        if not isinstance(self.max_ongoing_requests, int) or self.max_ongoing_requests < 1:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests!r} must be an integer >= 1"
            )
        if not isinstance(self.max_queued_requests, int) or self.max_queued_requests < -1:
            raise ValueError(
                f"max_queued_requests={self.max_queued_requests!r} must be an integer >= 0, "
                "or -1 for the default (handles wait without bound, HTTP gets 503 at once)"
            )
        for key in ("health_check_period_s", "health_check_timeout_s",
                    "graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{key}={value!r} must be a number > 0")
        unknown = set(self.ray_actor_options) - _ACTOR_OPTION_KEYS
        if unknown:
            raise ValueError(
                f"ray_actor_options may not set {sorted(unknown)}; "
                f"allowed: {', '.join(sorted(_ACTOR_OPTION_KEYS))}"
            )

    @property
    def start_replicas(self) -> int:
        """The replicas a deployment starts with: ``num_replicas``, or the autoscaling config's
        ``start_replicas``.
        """
        if self.autoscaling_config is not None:
            return self.autoscaling_config.start_replicas
        return self.num_replicas


def make_config(base: DeploymentConfig, options: dict[str, Any]) -> DeploymentConfig:
    known = set(DeploymentConfig.__dataclass_fields__)
    changes: dict[str, Any] = {}
    for key, value in options.items():
        key = _ALIASES.get(key, key)
        if key in _REJECTED:
            raise ValueError(f"deployment option {key}={value!r} is not supported: "
                             f"{_REJECTED[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown deployment option {key!r}{hint}; known: {', '.join(sorted(known))}"
            )
        if key == "autoscaling_config" and value is not None:
            value = AutoscalingConfig.from_any(value)
        if key == "ray_actor_options":
            value = dict(value or {})
        if key == "logging_config" and value is not None:
            value = LoggingConfig.from_any(value)
        changes[key] = value
    if changes.get("autoscaling_config") is not None and "num_replicas" in options:
        raise ValueError("pass num_replicas or autoscaling_config, not both")
    return replace(base, **changes)


class _Unset:
    """No ``route_prefix`` was given (``None`` means: not on HTTP)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def check_route_prefix(route_prefix: Any) -> None:
    if route_prefix is UNSET or route_prefix is None:
        return
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix={route_prefix!r} must be a string that starts with '/' "
                         "(or None: not reachable over HTTP)")


class Deployment:
    """A class or function to run as replicas. ``.bind(*args)`` makes it an application.

    ``route_prefix`` (Ray 2.5's deployment option) is where the application answers HTTP when
    this deployment is its ingress (the one given to ``serve.run``); ``serve.run``'s own
    ``route_prefix`` wins when given. Other deployments of an application may not set one.
    """

    def __init__(self, target: Any, name: str, config: DeploymentConfig,
                 route_prefix: str | None = UNSET) -> None:
        check_route_prefix(route_prefix)
        self.func_or_class = target
        self.name = name
        self.config = config
        self.route_prefix = route_prefix
        self._graph_app: Application | None = None  # the one application of its graph calls

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"deployment {self.name} cannot be called directly; use "
            f"serve.run({self.name}.bind(...)) and call the handle it returns"
        )

    def options(self, *, name: str | None = None, route_prefix: str | None = UNSET,
                **options: Any) -> Deployment:
        """A copy with some options changed (same names as ``@serve.deployment``)."""
        return Deployment(self.func_or_class, name or self.name, make_config(self.config, options),
                          self.route_prefix if route_prefix is UNSET else route_prefix)

    def deploy(self, *init_args: Any, _blocking: bool = True, **init_kwargs: Any) -> None:
        """Deprecated (Ray 1.x's API, still in Ray 2.5): deploy this deployment alone, as an
        application of its own name, on HTTP at its ``route_prefix`` (default
        ``/<name>``). Use ``serve.run(MyDeployment.bind(...))``."""
        from ember.serve import _api

        _api.deprecated("Deployment.deploy()", "serve.run(MyDeployment.bind(...))")
        prefix = f"/{self.name}" if self.route_prefix is UNSET else self.route_prefix
        _api.run(self.bind(*init_args, **init_kwargs), name=self.name, route_prefix=prefix)

    def get_handle(self, sync: bool | None = True) -> Any:
        """Deprecated (Ray 2.5): a handle to this deployment where it runs. Use the handle
        ``serve.run`` returns, or ``serve.get_deployment_handle(name, app_name)``."""
        from ember.serve import _api

        _api.deprecated("Deployment.get_handle()",
                        "the handle serve.run returns, or serve.get_deployment_handle()")
        return _api.handle_of(self.name)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """Arguments for the constructor (or function); other bound deployments become handles.

        A function deployment bound to graph nodes (``combine.bind(x, y)``, ``x`` and ``y``
        from an ``InputNode`` or method calls) is a call in a deployment graph instead, made
        per request (see ``ember.serve.drivers.DAGDriver``); a class receives graph nodes as
        values (``DAGDriver.bind(graph)``), and ``bound.method.bind(...)`` calls its methods.
        """
        from ember.serve._graph import DeploymentFunctionNode, has_nodes

        if inspect.isclass(self.func_or_class) or not has_nodes((*args, *kwargs.values())):
            # A class receives graph nodes as they are (DAGDriver.bind(graph) runs its graph).
            return Application(self, args, kwargs)
        if self._graph_app is None:  # every call of this function deployment: one deployment
            self._graph_app = Application(self, (), {})
        return DeploymentFunctionNode(self._graph_app, args, kwargs)


@dataclass(frozen=True)
class Application:
    """A bound deployment: what ``serve.run`` deploys, with the deployments it refers to."""

    deployment: Deployment
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def walk(self) -> list[Application]:
        """This application and every bound deployment in its arguments, dependencies first."""
        found: list[Application] = []
        seen: set[int] = set()

        def visit(app: Application) -> None:
            if id(app) in seen:
                return
            seen.add(id(app))
            for child in _children(app.args) + _children(list(app.kwargs.values())):
                visit(child)
            found.append(app)

        visit(self)
        return found

    def __getattr__(self, name: str) -> Any:
        """``bound.method``, whose ``.bind(...)`` makes a call in a deployment graph."""
        if name.startswith("_"):
            raise AttributeError(name)
        from ember.serve._graph import MethodBinder

        return MethodBinder(self, name)


def _children(values: Any) -> list[Application]:
    found: list[Application] = []
    for value in values:
        if isinstance(value, Application):
            found.append(value)
        elif isinstance(value, DAGNode):
            found.extend(_children(value._dag_values()))
        elif isinstance(value, (list, tuple)):
            found.extend(_children(value))
        elif isinstance(value, dict):
            found.extend(_children(list(value.values())))
    return found


def replace_applications(value: Any, swap: Callable[[Application], Any],
                         nodes: dict[int, DAGNode] | None = None) -> Any:
    """``value`` with every bound deployment inside it (lists, tuples, dicts, graph nodes)
    swapped; ``nodes`` maps the graph nodes already copied, so that a node used twice stays
    one node."""
    if nodes is None:
        nodes = {}
    if isinstance(value, Application):
        return swap(value)
    if isinstance(value, DAGNode):
        if id(value) not in nodes:
            nodes[id(value)] = value._dag_map(lambda v: replace_applications(v, swap, nodes))
        return nodes[id(value)]
    if isinstance(value, list):
        return [replace_applications(v, swap, nodes) for v in value]
    if isinstance(value, tuple):
        return tuple(replace_applications(v, swap, nodes) for v in value)
    if isinstance(value, dict):
        return {k: replace_applications(v, swap, nodes) for k, v in value.items()}
    return value


def deployment(_target: Any = None, *, name: str | None = None,
               route_prefix: str | None = UNSET, **options: Any) -> Any:
    """Make a class or function a deployment (used bare or with options)::

        @serve.deployment(num_replicas=2, max_ongoing_requests=8)
        class Echo:
            async def __call__(self, request):
                return await request.body()

        handle = serve.run(Echo.bind())
    """
    base = make_config(DeploymentConfig(), options)
    check_route_prefix(route_prefix)

    def make(target: Any) -> Deployment:
        if not (inspect.isclass(target) or callable(target)):
            raise TypeError(f"@serve.deployment needs a class or function, got {target!r}")
        return Deployment(target, str(name or getattr(target, "__name__", "Deployment")), base,
                          route_prefix)

    if _target is not None:
        return make(_target)
    return make


def ingress(asgi_app: Any) -> Callable[..., type]:
    """Serve a class's HTTP traffic through an ASGI app (FastAPI, Starlette)::

        app = FastAPI()

        @serve.deployment
        @serve.ingress(app)
        class Api:
            def __init__(self) -> None:
                self.model = load_model()

            @app.post("/predict/{name}")
            async def predict(self, name: str, body: Features) -> dict:
                return {"name": name, "score": self.model(body)}

    With FastAPI, methods of the class decorated with the app's route decorators are the
    handlers, ``self`` being the replica's instance; path, query and body parameters work as
    in FastAPI (a body that fails validation gets 422). Handlers that are plain functions (any
    ASGI app) find the instance as ``request.scope["ember_serve_replica"]``.

    ``asgi_app`` may also be a factory: a function taking no arguments that returns the app.
    Each replica calls it when it starts, so the app is built where it runs and never pickled
    (as Ray's builder functions). ``serve.ingress(app)()`` (no class) makes an empty class
    around the app, as in Ray.
    """
    factory = _is_app_factory(asgi_app)

    def mark(cls: type | None = None) -> type:
        if cls is None:
            cls = type("ASGIIngressWrapper", (), {"__module__": __name__})
        if not inspect.isclass(cls):
            raise TypeError(f"@serve.ingress decorates a class, got {cls!r}")
        if not factory and _is_fastapi(asgi_app):
            from ember.serve._fastapi import bind_methods

            bind_methods(asgi_app, cls)
        cls.__ember_serve_asgi__ = AsgiIngress(asgi_app, factory=factory)  # type: ignore[attr-defined]
        return cls

    return mark


def _is_fastapi(app: Any) -> bool:
    import sys

    fastapi = sys.modules.get("fastapi")  # never imported here: a FastAPI app means it is
    return fastapi is not None and isinstance(app, fastapi.FastAPI)


def _is_app_factory(app: Any) -> bool:
    """A callable that takes no arguments (an ASGI app takes scope, receive and send)."""
    if inspect.isclass(app) or not callable(app):
        return False
    import sys

    starlette = sys.modules.get("starlette.applications")
    if starlette is not None and isinstance(app, starlette.Starlette):
        return False
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):  # no signature to read: take it for an app
        return False
    required = [p for p in parameters if p.default is inspect.Parameter.empty and p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return not required


class AsgiIngress:
    """Holds an ingress ASGI app (or its factory) so that it travels to replicas (see below)."""

    def __init__(self, app: Any, *, factory: bool = False) -> None:
        self.app = app
        self.factory = factory

    def build(self) -> AsgiIngress:
        """The ingress as a replica runs it: a factory is called (once per replica) here."""
        if not self.factory:
            return self
        app = self.app()
        if not callable(app):
            raise TypeError(f"the @serve.ingress factory {self.app!r} returned {app!r}, which "
                            "is not an ASGI app; return the FastAPI (or Starlette) app")
        return AsgiIngress(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def __reduce__(self) -> tuple[Any, ...]:
        _make_starlette_state_picklable()  # in whichever process pickles it
        return (_rebuild_ingress, (self.app, self.factory))


def _rebuild_ingress(app: Any, factory: bool) -> AsgiIngress:
    return AsgiIngress(app, factory=factory)


def _make_starlette_state_picklable() -> None:
    """Starlette's ``State`` cannot be unpickled (its ``__getattr__`` recurses before
    ``_state`` exists), so an app could not travel to its replicas. Teach pickle to rebuild it
    from its dict; this changes nothing for code that never pickles a ``State``."""
    import copyreg
    import sys

    datastructures = sys.modules.get("starlette.datastructures")
    if datastructures is None:  # the app is not a Starlette one
        return
    state_type = datastructures.State
    copyreg.pickle(state_type, lambda state: (state_type, (dict(state._state),)))
