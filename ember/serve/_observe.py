"""What serve shows in the dashboard and on ``/metrics``, through ``ember.util.metrics``.

Replicas count their requests, errors and latency (Ray Serve's metric names) and how many
requests they hold; the controller publishes the ``"serve"`` view: every application with its
deployments and their replicas (state, ongoing requests, loaded models, process).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from ember.util import metrics

logger = logging.getLogger("ember.serve")

PUBLISH_PERIOD_S = 0.5
# Ray Serve's default latency buckets, in milliseconds
LATENCY_BOUNDARIES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000,
                         60000)
_TAGS = ("application", "deployment", "replica")

F = TypeVar("F", bound=Callable[..., Any])


class _ReplicaStats:
    """A replica's request metrics. A request only counts itself here; what the requests of
    one turn of the event loop changed is recorded at its end, together (a gauge set and a
    counter increment per turn, not two sets and an increment per request)."""

    def __init__(self, replica_id: str) -> None:
        app, deployment, _ = [*replica_id.rsplit("#", 2), "", ""][:3]
        self.tags = {"application": app, "deployment": deployment, "replica": replica_id}
        self.ongoing = 0
        # This replica's own instances, its tags their defaults: a recording then carries no
        # tags to check and merge.
        meters = _meters()
        for meter in meters:
            meter.set_default_tags(self.tags)
        self.requests, self.errors, self.latency, self.gauge = meters
        self._finished = 0
        self._failed = 0
        self._latencies_ms: list[float] = []
        self._record_soon = False

    def started(self) -> None:
        self.ongoing += 1
        if not self._record_soon:
            self._schedule()

    def finished(self, failed: bool, seconds: float) -> None:
        self.ongoing -= 1
        self._finished += 1
        if failed:
            self._failed += 1
        self._latencies_ms.append(seconds * 1000.0)
        if not self._record_soon:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: record at once
            self.record()
            return
        self._record_soon = True
        loop.call_soon(self.record)

    def record(self) -> None:
        """Record what changed since the last call."""
        self._record_soon = False
        self.gauge.set(self.ongoing)
        if self._finished:
            self.requests.inc(self._finished)
            self._finished = 0
        if self._failed:
            self.errors.inc(self._failed)
            self._failed = 0
        latencies, self._latencies_ms = self._latencies_ms, []
        for ms in latencies:
            self.latency.observe(ms)


def _meters() -> tuple[metrics.Counter, metrics.Counter, metrics.Histogram, metrics.Gauge]:
    return (
        metrics.Counter("serve_deployment_request_counter",
                        "Requests a replica finished.", _TAGS),
        metrics.Counter("serve_deployment_error_counter",
                        "Requests a replica finished with an exception.", _TAGS),
        metrics.Histogram("serve_deployment_processing_latency_ms",
                          "Time a replica took for a request, in milliseconds.",
                          LATENCY_BOUNDARIES_MS, _TAGS),
        metrics.Gauge("serve_replica_processing_queries",
                      "Requests a replica holds now.", _TAGS),
    )


def _stats(replica: Any) -> _ReplicaStats:
    stats: _ReplicaStats | None = replica.__dict__.get("_observe_stats")
    if stats is None:
        stats = replica.__dict__["_observe_stats"] = _ReplicaStats(replica.replica_id)
    return stats


def tracked(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Count a replica's request method (a coroutine) in its replica's metrics."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        stats = _stats(self)
        stats.started()
        start = time.perf_counter()
        failed = False
        try:
            return await method(self, *args, **kwargs)
        except asyncio.CancelledError:  # the caller went away: not the replica's error
            raise
        except Exception:
            failed = True
            raise
        finally:
            stats.finished(failed, time.perf_counter() - start)

    return wrapper


def tracked_stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Count a replica's streaming request method (an async generator): its latency is the
    whole stream's."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stats = _stats(self)
        stats.started()
        start = time.perf_counter()
        failed = False
        produced = cast(AsyncGenerator[Any, None], method(self, *args, **kwargs))
        try:
            async for item in produced:
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            failed = True
            raise
        finally:
            await produced.aclose()  # closed now, not when collected: the user's generator too
            stats.finished(failed, time.perf_counter() - start)

    return wrapper


@functools.cache
def identity() -> dict[str, Any]:
    """This replica's process and actor id, for the controller's view."""
    import ember

    return {"pid": os.getpid(), "actor_id": ember.get_runtime_context().get_actor_id()}


class ViewPublisher:
    """The controller's side: publishes the applications at most every PUBLISH_PERIOD_S."""

    def __init__(self) -> None:
        self._last = 0.0
        self._known: set[str] = set()

    def maybe_publish(self, apps: dict[str, Any], now: float | None = None,
                      force: bool = False, flush: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if not force and now - self._last < PUBLISH_PERIOD_S:
            return
        self._last = now
        try:
            for name, app in apps.items():
                metrics.publish("serve", name, state=_app_state(app))
            for gone in self._known - set(apps):
                metrics.publish("serve", gone, state={"status": "DELETED", "route_prefix": None,
                                                      "deployments": {}})
            self._known = set(apps)
            if flush:  # the controller is about to stop: send it now
                metrics.flush()
        except Exception:  # best-effort telemetry: a view must never stop the controller
            logger.debug("serve: publishing the dashboard's view failed", exc_info=True)


def _app_state(app: Any) -> dict[str, Any]:
    deployments = {}
    for dep in app.deployments.values():
        replicas = []
        for rid, info in dep.replicas.items():
            state = ("STOPPING" if info.stopping_since is not None
                     else "RUNNING" if info.running else "STARTING")
            replicas.append({"replica_id": rid, "state": state, "ongoing": info.ongoing,
                             "models": list(info.models), "pid": info.pid,
                             "actor_id": info.actor_id})
        deployments[dep.name] = {"status": dep.status(), "target_replicas": dep.target_replicas,
                                 "message": dep.message, "replicas": replicas,
                                 "autoscaling": dep.policy is not None}
    statuses = {d["status"] for d in deployments.values()}
    status = ("DEPLOY_FAILED" if "DEPLOY_FAILED" in statuses
              else "RUNNING" if statuses <= {"HEALTHY"} else "DEPLOYING")
    return {"status": status, "route_prefix": app.route_prefix, "ingress": app.ingress,
            "deployments": deployments}
