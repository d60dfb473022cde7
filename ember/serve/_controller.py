"""The serve controller: an async actor that holds every application's state.

It starts and stops replicas to match each deployment's target (fixed, or from the autoscaling
policy), polls replicas for their load and models, replaces replicas that die or fail health
checks, answers routers' long polls with the live replicas, and runs the HTTP proxies (restarting
one that dies, following nodes that join or leave: ``_proxy_policy.py``).

It survives its own death: it runs with ``max_restarts=-1``, its replicas and proxies belong to
the keeper (``_keeper.py``), and after each change it leaves a checkpoint there. A restarted
controller reads it back on its first call (``_ready``) and carries on with the same replicas
and proxies, which kept serving meanwhile; calls in flight when it died are sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ember
from ember.serve._autoscaling import AutoscalingPolicy
from ember.serve._deployment import DeploymentConfig
from ember.serve._handle import CONTROLLER_NAMESPACE, await_ref
from ember.serve._observe import ViewPublisher
from ember.serve._proxy_policy import plan_proxies
from ember.serve._rollout import old_replicas_serving

logger = logging.getLogger("ember.serve")

CONTROL_PERIOD_S = 0.1
PROXY_CHECK_PERIOD_S = 2.0
PROXY_PING_TIMEOUT_S = 10.0
LONG_POLL_S = 2.0
MAX_CONSTRUCTOR_FAILURES = 3
QUEUED_REPORT_TTL_S = 60.0


@dataclass
class _ReplicaInfo:
    actor: Any
    ready_ref: Any = None
    running: bool = False
    stopping_since: float | None = None
    drain_checked: float = 0.0
    ongoing: int = 0
    models: list[str] = field(default_factory=list)
    model_slots: int | None = None
    last_health: float = 0.0
    health_check: asyncio.Task[Any] | None = None  # runs beside the loop, never blocks it
    pid: int | None = None  # observe: shown in the dashboard
    actor_id: str | None = None


@dataclass
class _Deployment:
    name: str
    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    config: DeploymentConfig
    target_replicas: int
    policy: AutoscalingPolicy | None = None
    replicas: dict[str, _ReplicaInfo] = field(default_factory=dict)
    failures: int = 0
    message: str = ""
    last_sample: float = float("-inf")  # when the autoscaling policy last saw the load

    @property
    def running(self) -> list[str]:
        return [r for r, i in self.replicas.items() if i.running and i.stopping_since is None]

    def status(self) -> str:
        if self.failures >= MAX_CONSTRUCTOR_FAILURES:
            return "DEPLOY_FAILED"
        if len(self.running) == self.target_replicas and all(
            i.running or i.stopping_since is not None for i in self.replicas.values()
        ):
            return "HEALTHY"
        return "UPDATING"


@dataclass
class _App:
    route_prefix: str | None
    ingress: str
    deployments: dict[str, _Deployment]


class Controller:
    def __init__(self) -> None:
        self._apps: dict[str, _App] = {}
        self._version = 0
        self._changed: asyncio.Condition | None = None
        self._next_id = 0  # the number of the next replica
        self._loop_task: asyncio.Task[None] | None = None
        # node id -> (the HTTP proxy actor pinned there, its port); the first is the main one
        self._proxies: dict[str, tuple[Any, int]] = {}
        self._proxy_location: str | None = None
        self._proxy_config: tuple[str, int, dict[str, Any] | None] | None = None  # host, port
        self._proxy_homes: dict[str, str | None] = {}  # proxy key -> the node it runs on
        self._proxy_task: asyncio.Task[None] | None = None
        # (app, deployment) -> router client id -> (calls queued there, when reported, seq)
        self._queued: dict[tuple[str, str], dict[str, tuple[int, float, int]]] = {}
        self._views = ViewPublisher()  # observe: the "serve" view of the dashboard
        self._keeper: Any = None
        self._started: asyncio.Future[None] | None = None
        self._saved: Any = None  # the shape of the last checkpoint (what changes it)
        self._saving: asyncio.Task[None] | None = None
        self._killed: list[Any] = []  # actors killed since the last checkpoint
        # (app, deployment) replaced by a redeploy or deleted: its replicas serve while the
        # new version comes up (_rollout), then drain (finish what they hold) and stop. Not
        # checkpointed: a restarted controller stops them as strays.
        self._retired: list[tuple[str, _Deployment]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ready()

    async def _ready(self) -> None:
        """Start once: find the keeper, take up its checkpoint (after a restart), and run the
        control loops. Every public method awaits this first."""
        if self._loop_task is not None:  # started: the common case, kept cheap
            return
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._recover()
            except BaseException as exc:
                failed, self._started = self._started, None
                if isinstance(exc, Exception):  # for calls waiting on this start
                    failed.set_exception(exc)
                    failed.exception()  # read here, so an unawaited one is not logged as lost
                else:
                    failed.cancel()
                raise
            self._changed = asyncio.Condition()
            self._loop_task = asyncio.create_task(self._run())
            if self._proxies:
                self._proxy_task = asyncio.create_task(self._supervise_proxies())
            self._started.set_result(None)
        await asyncio.shield(self._started)

    async def _recover(self) -> None:
        from ember.serve._keeper import KEEPER_NAME

        # Made by serve's _api before this actor: it owns the replicas and proxies.
        self._keeper = ember.get_actor(KEEPER_NAME, namespace=CONTROLLER_NAMESPACE)
        specs, checkpoint = await _await(self._keeper.load.remote())
        if not specs and checkpoint is None:
            return  # a fresh start
        self._restore(specs, checkpoint)
        known = {info.actor for app in self._apps.values() for dep in app.deployments.values()
                 for info in dep.replicas.values()} | {p for p, _ in self._proxies.values()}
        # Started by the keeper for the controller that died, after its last checkpoint.
        strays = [a for a in await _await(self._keeper.created.remote()) if a not in known]
        for actor in strays:
            self._kill(actor)
        replicas = sum(len(d.replicas) for a in self._apps.values()
                       for d in a.deployments.values())
        logger.warning("serve: the controller restarted; took up %d application(s), %d "
                       "replica(s) and %d HTTP proxy(ies) from its checkpoint",
                       len(self._apps), replicas, len(self._proxies))

    async def start_proxy(self, host: str, port: int, options: dict[str, Any] | None = None,
                          node_ids: list[str | None] | None = None,
                          location: str = "HeadOnly") -> int | None:
        """Start the HTTP proxies, once (``options``: ``HTTPOptions.proxy_options()``): one on
        each of ``node_ids`` (pinned there; ``None``: wherever the core puts it), none for
        ``location="Disabled"``. Returns the main proxy's port (None when disabled). From then
        on the controller keeps them: see ``_supervise_proxies``."""
        await self._ready()
        if self._proxy_location is None:
            started: dict[str, tuple[Any, int]] = {}
            try:
                for node_id in node_ids if node_ids is not None else [None]:
                    started[node_id or ""] = await self._new_proxy(node_id, host, port, options)
            except BaseException:
                for proxy, _ in started.values():
                    self._kill(proxy)
                raise  # nothing kept: a later call (another port, say) starts them afresh
            self._proxy_location = location
            self._proxy_config = (host, port, options)
            self._proxies = started
            self._proxy_homes = {key: key or None for key in started}
            await self._push_routes()
            if started:
                self._proxy_task = asyncio.create_task(self._supervise_proxies())
            await self._checkpoint()
        return self._main_port()

    async def _new_proxy(self, node_id: str | None, host: str, port: int,
                         options: dict[str, Any] | None) -> tuple[Any, int]:
        from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_options: dict[str, Any] = {"max_concurrency": 10_000, "num_cpus": 0}
        if node_id is not None:
            actor_options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id, soft=False)
        proxy = await self._create("proxy", actor_options, (), {})
        try:
            bound = await _await(proxy.start.remote(host, port, options))
        except BaseException:
            self._kill(proxy)
            raise
        return proxy, int(bound)

    async def _create(self, kind: str, options: dict[str, Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        """A replica or proxy actor started by the keeper, so that it outlives this actor."""
        ref = self._keeper.create.remote(kind, options, args, kwargs)
        try:
            return await _await(ref)
        except asyncio.CancelledError:
            # Dropped while being made: stop it once it exists.
            asyncio.get_running_loop().create_task(self._kill_when_made(ref))
            raise

    async def _kill_when_made(self, ref: Any) -> None:
        with contextlib.suppress(Exception):  # not made at all: nothing to stop
            self._kill(await _await(ref))

    def _kill(self, actor: Any) -> None:
        self._killed.append(actor)
        with contextlib.suppress(Exception):  # gone already: nothing to stop
            ember.kill(actor)

    async def _supervise_proxies(self) -> None:
        """Every PROXY_CHECK_PERIOD_S: ping each proxy and look at the nodes; restart a proxy
        that died on its port, drop the proxy of a node that left, and (EveryNode) start one
        on a node that joined. Runs until shutdown."""
        while True:
            await asyncio.sleep(PROXY_CHECK_PERIOD_S)
            try:
                await self._check_proxies()
            except Exception:  # keep watching: one failed round must not end the supervision
                logger.exception("serve controller: checking the HTTP proxies failed")

    async def _check_proxies(self) -> None:
        keys = list(self._proxies)
        answers = await asyncio.gather(
            *(asyncio.wait_for(_await(self._proxies[key][0].ping.remote()), PROXY_PING_TIMEOUT_S)
              for key in keys), return_exceptions=True)
        gone: dict[str, BaseException] = {}
        for key, answer in zip(keys, answers, strict=True):
            if isinstance(answer, BaseException):
                gone[key] = answer
            else:
                self._proxy_homes[key] = str(answer)
        assert self._proxy_location is not None and self._proxy_config is not None
        plan = plan_proxies(self._proxy_location, ember.nodes(), self._proxy_homes, set(gone))
        if not plan:
            return
        host, port, options = self._proxy_config
        for key in plan.drop:
            logger.warning("serve: node %s left the cluster; its HTTP proxy (port %d) with it",
                           key, self._proxies[key][1])
            self._forget_proxy(key)
        for key in plan.restart:
            old, old_port = self._proxies[key]
            logger.warning("serve: the HTTP proxy on port %d is gone (%s); starting a new one "
                           "on the same port", old_port, _short(gone[key]))
            self._kill(old)  # dead already, most likely
            await self._replace_proxy(key, key or None, host, old_port, options)
        for node in plan.start:
            logger.info("serve: node %s joined; starting an HTTP proxy there", node)
            await self._replace_proxy(node, node, host, port, options)
        await self._push_routes()
        await self._checkpoint()

    async def _replace_proxy(self, key: str, node_id: str | None, host: str, port: int,
                             options: dict[str, Any] | None) -> None:
        try:
            self._proxies[key] = await self._new_proxy(node_id, host, port, options)
        except Exception as exc:
            # A restart keeps the dead handle: the next round finds it gone and tries again.
            logger.error("serve: could not start an HTTP proxy on %s port %d (%s); trying "
                         "again in %.0f s", f"node {node_id}" if node_id else "this node", port,
                         _short(exc), PROXY_CHECK_PERIOD_S)
            return
        self._proxy_homes.setdefault(key, node_id)

    def _forget_proxy(self, key: str) -> None:
        proxy, _ = self._proxies.pop(key)
        self._proxy_homes.pop(key, None)
        self._kill(proxy)  # its node is gone, and it with it

    async def shutdown(self) -> None:
        await self._ready()
        for task in (self._loop_task, self._proxy_task, self._saving):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task  # a proxy being started must not outlive the shutdown
        self._proxy_task = None
        proxies, self._proxies = self._proxies, {}
        self._proxy_homes = {}
        for proxy, _ in proxies.values():
            try:
                await asyncio.wait_for(_await(proxy.stop.remote()), 10)
            except BaseException:
                pass  # killing it below stops it anyway
            self._kill(proxy)
        for app in self._apps.values():
            for dep in app.deployments.values():
                for info in dep.replicas.values():
                    self._kill(info.actor)
        self._apps.clear()
        await self._bump()
        self._views.maybe_publish(self._apps, force=True, flush=True)  # observe

    # -- applications ------------------------------------------------------------------------

    async def deploy(
        self, app_name: str, route_prefix: str | None, ingress: str,
        deployments: list[tuple[str, Any, tuple[Any, ...], dict[str, Any], DeploymentConfig]],
    ) -> None:
        await self._ready()
        old = self._apps.get(app_name)
        for other_name, other in self._apps.items():
            if other_name != app_name and route_prefix and other.route_prefix == route_prefix:
                raise ValueError(
                    f"route_prefix {route_prefix!r} is already used by application "
                    f"{other_name!r}; pick another or serve.delete({other_name!r}) first"
                )
        states: dict[str, _Deployment] = {}
        for name, target, args, kwargs, config in deployments:
            policy = None
            if config.autoscaling_config is not None:
                policy = AutoscalingPolicy(config.autoscaling_config)
            states[name] = _Deployment(name, target, args, kwargs, config,
                                       config.start_replicas, policy)
        if old is not None:  # redeploy: the old replicas serve until the new ones are up
            for dep in old.deployments.values():
                self._retire_deployment(app_name, dep)
        self._apps[app_name] = _App(route_prefix, ingress, states)
        # Before any replica: a restarted controller then knows the app.
        await _await(self._keeper.save_app.remote(app_name, self._spec_of(self._apps[app_name])))
        await self._reconcile()
        await self._push_routes()

    async def wait_healthy(self, app_name: str, timeout_s: float) -> str:
        await self._ready()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app = self._apps.get(app_name)
            if app is None:
                return "DELETED"
            statuses = [d.status() for d in app.deployments.values()]
            if "DEPLOY_FAILED" in statuses:
                failed = [f"{d.name}: {d.message}" for d in app.deployments.values()
                          if d.status() == "DEPLOY_FAILED"]
                return "DEPLOY_FAILED: " + "; ".join(failed)
            if all(s == "HEALTHY" for s in statuses):
                await self._refresh_proxies(app_name)
                return "RUNNING"
            await asyncio.sleep(0.02)
        return "DEPLOYING"

    async def delete(self, app_name: str) -> None:
        """Take the application out of routing at once; its replicas finish what they hold,
        then stop (``wait_deleted`` says when)."""
        await self._ready()
        app = self._apps.pop(app_name, None)
        if app is None:
            return
        await _await(self._keeper.save_app.remote(app_name, None))
        for dep in app.deployments.values():
            self._retire_deployment(app_name, dep)
        now = time.monotonic()
        for dep in (d for name, d in self._retired if name == app_name):
            for info in dep.replicas.values():
                if info.stopping_since is None:
                    info.stopping_since = now
                # No router sends here any more (the app is gone): look whether it is idle now.
                info.drain_checked = now - dep.config.graceful_shutdown_wait_loop_s
        await self._push_routes()
        await self._bump()
        self._views.maybe_publish(self._apps, force=True)  # observe

    async def wait_deleted(self, app_name: str, timeout_s: float) -> bool:
        """Whether every replica of the deleted application stopped within ``timeout_s``."""
        await self._ready()
        deadline = time.monotonic() + timeout_s
        while any(name == app_name for name, _ in self._retired):
            if app_name in self._apps or time.monotonic() > deadline:  # deployed again
                return False
            await asyncio.sleep(0.02)
        return True

    async def status(self) -> dict[str, Any]:
        await self._ready()
        out: dict[str, Any] = {}
        for name, app in self._apps.items():
            deps = {
                d.name: {"status": d.status(), "replicas": len(d.running),
                         "target_replicas": d.target_replicas, "message": d.message}
                for d in app.deployments.values()
            }
            statuses = {d["status"] for d in deps.values()}
            app_status = ("DEPLOY_FAILED" if "DEPLOY_FAILED" in statuses
                          else "RUNNING" if statuses == {"HEALTHY"} else "DEPLOYING")
            out[name] = {"status": app_status, "route_prefix": app.route_prefix,
                         "deployments": deps}
        return out

    async def ingress_of(self, app_name: str) -> str:
        await self._ready()
        return self._apps[app_name].ingress

    async def record_queued(self, app_name: str, deployment_name: str, client_id: str,
                            queued: int, seq: int) -> None:
        await self._ready()
        clients = self._queued.setdefault((app_name, deployment_name), {})
        known = clients.get(client_id)
        if known is not None and known[2] > seq:  # reports may overtake each other
            return
        clients[client_id] = (queued, time.monotonic(), seq)

    async def proxy_port(self) -> int | None:
        await self._ready()
        return self._main_port()

    def _main_port(self) -> int | None:
        return next(iter(self._proxies.values()))[1] if self._proxies else None

    async def proxy_ports(self) -> dict[str, int]:
        """Node id -> the port of the HTTP proxy on that node."""
        await self._ready()
        return {node: port for node, (_, port) in self._proxies.items()}

    async def routing_info(
        self, app_name: str, deployment_name: str, known_version: int
    ) -> dict[str, Any] | None:
        """Live replicas of a deployment; waits (up to a while) until something changed."""
        await self._ready()
        assert self._changed is not None
        if self._version == known_version:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), LONG_POLL_S)
                except asyncio.TimeoutError:
                    pass
        app = self._apps.get(app_name)
        dep = None if app is None else app.deployments.get(deployment_name)
        if dep is None:
            return None
        live = {r: dep.replicas[r] for r in dep.running}
        if dep.status() == "UPDATING":  # a redeploy: the old version serves beside the new
            for name, old in self._retired:
                if (name, old.name) == (app_name, deployment_name):
                    live.update((r, old.replicas[r]) for r in old.running)
        return {
            "version": self._version,
            "max_ongoing_requests": dep.config.max_ongoing_requests,
            "max_queued_requests": dep.config.max_queued_requests,
            "replicas": {r: info.actor for r, info in live.items()},
            "models": {r: info.models for r, info in live.items()},
            "model_slots": {r: info.model_slots for r, info in live.items()},
        }

    # -- the control loop --------------------------------------------------------------------

    async def _bump(self) -> None:
        self._version += 1
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _refresh_proxies(self, app_name: str) -> None:
        """The proxies' routers take the new routing now (not at their long poll's next
        answer): an HTTP request sent once ``serve.run`` returned reaches the new version."""
        proxies = [proxy for proxy, _ in self._proxies.values()]
        await asyncio.gather(*(asyncio.wait_for(_await(p.refresh.remote(app_name)),
                                                PROXY_PING_TIMEOUT_S) for p in proxies),
                             return_exceptions=True)  # a dead proxy: its restart routes anew

    async def _push_routes(self) -> None:
        routes = {app.route_prefix: (name, app.ingress)
                  for name, app in self._apps.items() if app.route_prefix is not None}
        keys = list(self._proxies)
        answers = await asyncio.gather(
            *(_await(self._proxies[key][0].set_routes.remote(routes)) for key in keys),
            return_exceptions=True)
        for key, answer in zip(keys, answers, strict=True):
            if isinstance(answer, BaseException):  # a dead proxy: its restart pushes the routes
                logger.warning("serve: the HTTP proxy on port %d did not take the new routes "
                               "(%s)", self._proxies[key][1], _short(answer))

    async def _run(self) -> None:
        while True:
            try:
                await self._reconcile()
            except Exception:  # keep serving: one bad round must not stop the controller
                logger.exception("serve controller: control loop round failed")
            await asyncio.sleep(CONTROL_PERIOD_S)

    async def _reconcile(self) -> None:
        changed = False
        for app_name, app in list(self._apps.items()):
            for dep in list(app.deployments.values()):
                changed |= await self._poll_replicas(dep)
                changed |= self._autoscale(app_name, dep)
                changed |= self._scale(app_name, dep)
        changed |= await self._retire()
        if changed:
            await self._bump()
        self._views.maybe_publish(self._apps, force=changed)
        await self._checkpoint()

    def _retire_deployment(self, app_name: str, dep: _Deployment) -> None:
        """A replaced or deleted deployment: replicas still starting stop now (they never
        served); the others are left to ``_retire``."""
        for rid in [r for r, i in dep.replicas.items() if not i.running]:
            self._drop(dep, rid)
        if dep.replicas:
            self._retired.append((app_name, dep))

    async def _retire(self) -> bool:
        """Replicas of replaced versions: as many as ``old_replicas_serving`` allows keep
        serving; the others leave routing and drain as a scale-down does (they finish what
        they hold, then stop)."""
        changed = False
        budgets: dict[tuple[str, str], int] = {}
        for app_name, dep in list(self._retired):
            key = (app_name, dep.name)
            if key not in budgets:
                app = self._apps.get(app_name)
                new = None if app is None else app.deployments.get(dep.name)
                budgets[key] = 0 if new is None else old_replicas_serving(
                    new.target_replicas, len(new.running), new.status() == "UPDATING")
            now = time.monotonic()
            for info in dep.replicas.values():
                if info.stopping_since is not None:
                    continue
                if budgets[key] > 0:
                    budgets[key] -= 1
                else:
                    info.stopping_since = info.drain_checked = now
                    changed = True
            changed |= await self._poll_replicas(dep)
            if not dep.replicas:
                self._retired = [(a, d) for a, d in self._retired if d is not dep]
        return changed

    async def _poll_replicas(self, dep: _Deployment) -> bool:
        changed = False
        now = time.monotonic()
        checks: dict[str, Any] = {}
        for rid, info in dep.replicas.items():
            if info.running:
                checks[rid] = info.actor.metrics.remote()
            elif info.ready_ref is not None and info.ready_ref.done():
                try:
                    info.ready_ref.result()
                    info.running = True
                    info.last_health = now
                    dep.failures = 0
                    changed = True
                except Exception as exc:
                    dep.failures += 1
                    dep.message = f"replica constructor failed: {exc}"
                    logger.error("serve: deployment %s: %s", dep.name, dep.message)
                    self._drop(dep, rid)
                    return True
        timeout = dep.config.health_check_timeout_s
        answers = await asyncio.gather(
            *(asyncio.wait_for(_await(ref), timeout) for ref in checks.values()),
            return_exceptions=True,
        )
        for rid, metrics in zip(checks, answers, strict=True):
            info = dep.replicas[rid]
            if isinstance(metrics, BaseException):
                logger.warning("serve: replica %s is gone (%s); replacing it", rid, metrics)
                self._drop(dep, rid)
                changed = True
                continue
            if (metrics["models"], metrics.get("model_slots")) != (info.models,
                                                                    info.model_slots):
                changed = True
            info.ongoing, info.models = metrics["ongoing"], metrics["models"]
            info.pid, info.actor_id = metrics.get("pid"), metrics.get("actor_id")
            info.model_slots = metrics.get("model_slots")
            if info.stopping_since is not None:
                # Draining: look whether it is idle every graceful_shutdown_wait_loop_s.
                due = now - info.drain_checked >= dep.config.graceful_shutdown_wait_loop_s
                if due:
                    info.drain_checked = now
                if (due and info.ongoing == 0) or (
                    now - info.stopping_since > dep.config.graceful_shutdown_timeout_s
                ):
                    self._drop(dep, rid)
            elif info.health_check is not None and info.health_check.done():
                failure = info.health_check.exception()
                info.health_check = None
                if failure is not None:
                    logger.warning("serve: replica %s failed its health check (%r); "
                                   "replacing it", rid, failure)
                    self._drop(dep, rid)
                    changed = True
            elif (info.health_check is None
                  and now - info.last_health >= dep.config.health_check_period_s):
                info.last_health = now
                info.health_check = asyncio.ensure_future(asyncio.wait_for(
                    _await(info.actor.check_health.remote()), dep.config.health_check_timeout_s
                ))
        return changed

    def _drop(self, dep: _Deployment, rid: str) -> None:
        self._drop_info(dep.replicas.pop(rid))

    def _drop_info(self, info: _ReplicaInfo) -> None:
        for task in (info.ready_ref, info.health_check):
            if task is not None and not task.done():
                task.cancel()
        if info.actor is not None:  # else: still being made, stopped once made (_create)
            self._kill(info.actor)

    def _autoscale(self, app_name: str, dep: _Deployment) -> bool:
        if dep.policy is None:
            return False
        now = time.monotonic()
        if now - dep.last_sample < dep.policy.config.metrics_interval_s:
            return False
        dep.last_sample = now
        queued = self._queued.get((app_name, dep.name), {})
        for client_id, (n, since, seq) in list(queued.items()):
            if n and now - since > QUEUED_REPORT_TTL_S:  # its process likely went away
                queued[client_id] = (0, since, seq)
        total = sum(dep.replicas[r].ongoing for r in dep.running)
        total += sum(n for n, _, _ in queued.values())
        # Judge against the target, not the replicas already up: ones still starting count.
        wanted = dep.policy.decide(dep.target_replicas, total, now)
        if wanted != dep.target_replicas:
            logger.info("serve: autoscaling %s from %d to %d replicas", dep.name,
                        dep.target_replicas, wanted)
            dep.target_replicas = wanted
            return True
        return False

    def _scale(self, app_name: str, dep: _Deployment) -> bool:
        if dep.failures >= MAX_CONSTRUCTOR_FAILURES:
            return False
        active = [r for r, i in dep.replicas.items() if i.stopping_since is None]
        changed = False
        for _ in range(dep.target_replicas - len(active)):
            rid = f"{app_name}#{dep.name}#{self._next_id}"
            self._next_id += 1
            options: dict[str, Any] = {**dep.config.ray_actor_options,
                                       "max_concurrency": dep.config.max_ongoing_requests + 100}
            args = (rid, dep.target, dep.args, dep.kwargs, dep.config.user_config,
                    dep.config.max_ongoing_requests)
            kwargs = {"app_name": app_name, "deployment_name": dep.name,
                      "logging_config": dep.config.logging_config}
            info = _ReplicaInfo(None)
            info.ready_ref = asyncio.ensure_future(self._start_replica(info, options, args,
                                                                       kwargs))
            dep.replicas[rid] = info
        surplus = len(active) - dep.target_replicas
        if surplus > 0:
            # Stop the least busy first; they leave routing now and finish what they hold.
            by_load = sorted(active, key=lambda r: (dep.replicas[r].running,
                                                    dep.replicas[r].ongoing))
            for rid in by_load[:surplus]:
                if dep.replicas[rid].running:
                    dep.replicas[rid].stopping_since = time.monotonic()
                    dep.replicas[rid].drain_checked = time.monotonic()
                else:
                    self._drop(dep, rid)
            changed = True
        return changed

    async def _start_replica(self, info: _ReplicaInfo, options: dict[str, Any],
                             args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        info.actor = await self._create("replica", options, args, kwargs)
        await _await(info.actor.ready.remote())

    # -- the checkpoint (kept by the keeper) -------------------------------------------------

    async def _checkpoint(self) -> None:
        """Leave the state with the keeper when its shape changed (applications, replicas,
        proxies): what a restarted controller needs to carry on. One save at a time."""
        if self._saving is not None and not self._saving.done():
            return
        shape = (
            [(name, app.route_prefix, app.ingress,
              [(d.name, d.target_replicas, d.failures,
                [(r, i.running, i.stopping_since, i.actor is not None)
                 for r, i in d.replicas.items()]) for d in app.deployments.values()])
             for name, app in self._apps.items()],
            [(k, p) for k, (_, p) in self._proxies.items()], self._proxy_location,
            len(self._killed))
        if shape == self._saved:
            return
        self._saved = shape
        checkpoint = self._snapshot()
        killed, self._killed = self._killed, []
        self._saving = asyncio.create_task(self._save(checkpoint, killed))

    async def _save(self, checkpoint: dict[str, Any], killed: list[Any]) -> None:
        try:
            await _await(self._keeper.save.remote(checkpoint, killed))
        except Exception as exc:  # the next change saves again; say why this one did not
            self._saved = None
            self._killed = killed + self._killed
            logger.error("serve: could not leave the controller's checkpoint with the keeper "
                         "(%s); a controller restart now would lose the latest changes",
                         _short(exc))

    def _snapshot(self) -> dict[str, Any]:
        """The state that changes as the controller runs (not the deployments' code and
        arguments, left with the keeper once per deploy: ``_spec_of``)."""
        apps = {}
        for name, app in self._apps.items():
            deps = {}
            for d in app.deployments.values():
                replicas = {r: (i.actor, i.running, i.stopping_since)
                            for r, i in d.replicas.items() if i.actor is not None}
                deps[d.name] = (d.target_replicas, d.policy, d.failures, d.message, replicas)
            apps[name] = deps
        return {"apps": apps, "next_id": self._next_id, "version": self._version,
                "proxies": dict(self._proxies), "homes": dict(self._proxy_homes),
                "location": self._proxy_location, "proxy_config": self._proxy_config}

    @staticmethod
    def _spec_of(app: _App) -> tuple[Any, ...]:
        return (app.route_prefix, app.ingress,
                [(d.name, d.target, d.args, d.kwargs, d.config, d.policy)
                 for d in app.deployments.values()])

    def _restore(self, specs: dict[str, tuple[Any, ...]], checkpoint: dict[str, Any] | None
                 ) -> None:
        now = time.monotonic()
        saved = checkpoint["apps"] if checkpoint is not None else {}
        for name, (route_prefix, ingress, deployments) in specs.items():
            states = {}
            for dep_name, target, args, kwargs, config, policy in deployments:
                dep = _Deployment(dep_name, target, args, kwargs, config,
                                  config.start_replicas, policy)
                if dep_name in saved.get(name, {}):
                    (dep.target_replicas, dep.policy, dep.failures, dep.message,
                     replicas) = saved[name][dep_name]
                    for rid, (actor, running, stopping_since) in replicas.items():
                        info = _ReplicaInfo(
                            actor, running=running, last_health=now, drain_checked=now,
                            stopping_since=None if stopping_since is None else now)
                        if not running:  # was starting: wait for it as before
                            info.ready_ref = asyncio.ensure_future(
                                _await(actor.ready.remote()))
                        dep.replicas[rid] = info
                states[dep_name] = dep
            self._apps[name] = _App(route_prefix, ingress, states)
        if checkpoint is None:
            return
        self._next_id = checkpoint["next_id"]
        self._version = checkpoint["version"] + 1  # routers see a change and ask again
        self._proxies = dict(checkpoint["proxies"])
        self._proxy_homes = dict(checkpoint["homes"])
        self._proxy_location = checkpoint["location"]
        self._proxy_config = checkpoint["proxy_config"]


async def _await(ref: Any) -> Any:
    return await await_ref(ref)  # safe to cancel (timeouts, shutdown)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
