"""The serve controller: an async actor that holds every application's state.

It starts and stops replicas to match each deployment's target (fixed, or from the autoscaling
policy), polls replicas for their load and models, replaces replicas that die or fail health
checks, answers routers' long polls with the live replicas, and runs the HTTP proxies (restarting
one that dies, following nodes that join or leave: ``_proxy_policy.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ember
from ember.serve._autoscaling import AutoscalingPolicy
from ember.serve._deployment import DeploymentConfig
from ember.serve._handle import await_ref
from ember.serve._observe import ViewPublisher
from ember.serve._proxy_policy import plan_proxies
from ember.serve._replica import Replica

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
        self._ids = itertools.count()
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

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop_task is None:
            self._changed = asyncio.Condition()
            self._loop_task = asyncio.create_task(self._run())

    async def start_proxy(self, host: str, port: int, options: dict[str, Any] | None = None,
                          node_ids: list[str | None] | None = None,
                          location: str = "HeadOnly") -> int | None:
        """Start the HTTP proxies, once (``options``: ``HTTPOptions.proxy_options()``): one on
        each of ``node_ids`` (pinned there; ``None``: wherever the core puts it), none for
        ``location="Disabled"``. Returns the main proxy's port (None when disabled). From then
        on the controller keeps them: see ``_supervise_proxies``."""
        if self._proxy_location is None:
            started: dict[str, tuple[Any, int]] = {}
            try:
                for node_id in node_ids if node_ids is not None else [None]:
                    started[node_id or ""] = await self._new_proxy(node_id, host, port, options)
            except BaseException:
                for proxy, _ in started.values():
                    ember.kill(proxy)
                raise  # nothing kept: a later call (another port, say) starts them afresh
            self._proxy_location = location
            self._proxy_config = (host, port, options)
            self._proxies = started
            self._proxy_homes = {key: key or None for key in started}
            await self._push_routes()
            if started:
                self._proxy_task = asyncio.create_task(self._supervise_proxies())
        return self.proxy_port()

    async def _new_proxy(self, node_id: str | None, host: str, port: int,
                         options: dict[str, Any] | None) -> tuple[Any, int]:
        from ember.serve._proxy import Proxy
        from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_options: dict[str, Any] = {"max_concurrency": 10_000, "num_cpus": 0}
        if node_id is not None:
            actor_options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id, soft=False)
        proxy = ember.remote(Proxy).options(**actor_options).remote()
        try:
            bound = await _await(proxy.start.remote(host, port, options))
        except BaseException:
            ember.kill(proxy)
            raise
        return proxy, int(bound)

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
            with contextlib.suppress(Exception):  # already dead, most likely
                ember.kill(old)
            await self._replace_proxy(key, key or None, host, old_port, options)
        for node in plan.start:
            logger.info("serve: node %s joined; starting an HTTP proxy there", node)
            await self._replace_proxy(node, node, host, port, options)
        await self._push_routes()

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
        with contextlib.suppress(Exception):  # its node is gone, and it with it
            ember.kill(proxy)

    async def shutdown(self) -> None:
        for task in (self._loop_task, self._proxy_task):
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
            ember.kill(proxy)
        for app in self._apps.values():
            for dep in app.deployments.values():
                for info in dep.replicas.values():
                    ember.kill(info.actor)
        self._apps.clear()
        await self._bump()
        self._views.maybe_publish(self._apps, force=True, flush=True)  # observe

    # -- applications ------------------------------------------------------------------------

    async def deploy(
        self, app_name: str, route_prefix: str | None, ingress: str,
        deployments: list[tuple[str, Any, tuple[Any, ...], dict[str, Any], DeploymentConfig]],
    ) -> None:
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
        if old is not None:  # redeploy: replace every replica
            for dep in old.deployments.values():
                for info in dep.replicas.values():
                    ember.kill(info.actor)
        self._apps[app_name] = _App(route_prefix, ingress, states)
        await self._reconcile()
        await self._push_routes()

    async def wait_healthy(self, app_name: str, timeout_s: float) -> str:
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
                return "RUNNING"
            await asyncio.sleep(0.02)
        return "DEPLOYING"

    async def delete(self, app_name: str) -> None:
        app = self._apps.pop(app_name, None)
        if app is None:
            return
        for dep in app.deployments.values():
            for info in dep.replicas.values():
                ember.kill(info.actor)
        await self._push_routes()
        await self._bump()
        self._views.maybe_publish(self._apps, force=True)  # observe

    def status(self) -> dict[str, Any]:
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

    def ingress_of(self, app_name: str) -> str:
        return self._apps[app_name].ingress

    def record_queued(self, app_name: str, deployment_name: str, client_id: str,
                      queued: int, seq: int) -> None:
        clients = self._queued.setdefault((app_name, deployment_name), {})
        known = clients.get(client_id)
        if known is not None and known[2] > seq:  # reports may overtake each other
            return
        clients[client_id] = (queued, time.monotonic(), seq)

    def proxy_port(self) -> int | None:
        return next(iter(self._proxies.values()))[1] if self._proxies else None

    def proxy_ports(self) -> dict[str, int]:
        """Node id -> the port of the HTTP proxy on that node."""
        return {node: port for node, (_, port) in self._proxies.items()}

    async def routing_info(
        self, app_name: str, deployment_name: str, known_version: int
    ) -> dict[str, Any] | None:
        """Live replicas of a deployment; waits (up to a while) until something changed."""
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
        running = dep.running
        return {
            "version": self._version,
            "max_ongoing_requests": dep.config.max_ongoing_requests,
            "max_queued_requests": dep.config.max_queued_requests,
            "replicas": {r: dep.replicas[r].actor for r in running},
            "models": {r: dep.replicas[r].models for r in running},
            "model_slots": {r: dep.replicas[r].model_slots for r in running},
        }

    # -- the control loop --------------------------------------------------------------------

    async def _bump(self) -> None:
        self._version += 1
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

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
        if changed:
            await self._bump()
        self._views.maybe_publish(self._apps, force=changed)

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
        info = dep.replicas.pop(rid)
        for task in (info.ready_ref, info.health_check):
            if task is not None and not task.done():
                task.cancel()
        try:
            ember.kill(info.actor)
        except Exception:  # already dead: nothing to stop
            pass

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
            rid = f"{app_name}#{dep.name}#{next(self._ids)}"
            options: dict[str, Any] = {**dep.config.ray_actor_options,
                                       "max_concurrency": dep.config.max_ongoing_requests + 100}
            actor = _replica_class().options(**options).remote(
                rid, dep.target, dep.args, dep.kwargs, dep.config.user_config,
                dep.config.max_ongoing_requests, app_name=app_name, deployment_name=dep.name,
                logging_config=dep.config.logging_config,
            )
            ready = asyncio.ensure_future(_await(actor.ready.remote()))
            dep.replicas[rid] = _ReplicaInfo(actor, ready_ref=ready)
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


@functools.cache
def _replica_class() -> Any:
    return ember.remote(Replica)


async def _await(ref: Any) -> Any:
    return await await_ref(ref)  # safe to cancel (timeouts, shutdown)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
