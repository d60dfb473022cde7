"""Pure translations between ember and Ray: options, exceptions, resource feasibility.

Nothing here talks to a cluster. Functions that need Ray's classes import ``ray`` when they are
called (the backend has imported it by then), so this module is cheap to import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ember.core._remote import ActorMeta, MethodMeta
from ember.errors import (
    ActorAlreadyExistsError,
    ActorDiedError,
    ActorUnavailableError,
    BackendError,
    EmberError,
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

# Items a streaming generator may run ahead of its consumer (the local backend's bound too).
GENERATOR_BACKPRESSURE = 16

# ember options that Ray takes under the same name and meaning.
_TASK_PASSTHROUGH = frozenset({
    "num_cpus", "num_gpus", "resources", "max_retries", "retry_exceptions", "name", "memory",
    "scheduling_strategy", "runtime_env",
})
_ACTOR_PASSTHROUGH = frozenset({
    "num_cpus", "num_gpus", "resources", "name", "namespace", "lifetime", "max_restarts",
    "max_task_retries", "max_concurrency", "memory", "scheduling_strategy", "runtime_env",
    "get_if_exists",
})


class Unplaceable:
    """Stands in for the Ray handle of an actor that no node can ever hold: its calls raise
    ``error`` at once (see ``RayBackend.create_actor``)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return "Unplaceable()"


# -- options ----------------------------------------------------------------------------------


def is_streaming(num_returns: Any) -> bool:
    return isinstance(num_returns, str) and num_returns == "streaming"


def _placement(explicit: Mapping[str, Any], out: dict[str, Any]) -> None:
    from ember.core import _placement as ember_placement

    strategy = explicit.get("scheduling_strategy")
    if isinstance(strategy, ember_placement.PlacementGroupSchedulingStrategy):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        out["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            _ray_group(strategy.placement_group),
            placement_group_bundle_index=strategy.placement_group_bundle_index,
            placement_group_capture_child_tasks=strategy.placement_group_capture_child_tasks,
        )
    elif isinstance(strategy, ember_placement.NodeAffinitySchedulingStrategy):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        out["scheduling_strategy"] = NodeAffinitySchedulingStrategy(strategy.node_id,
                                                                    soft=strategy.soft)
    group = explicit.get("placement_group")
    if group is None or group == "default":
        return
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    index = explicit.get("placement_group_bundle_index")
    out["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
        _ray_group(group), placement_group_bundle_index=-1 if index is None else index,
    )


def _ray_group(group: Any) -> Any:
    """Ray's placement group for an ember ``PlacementGroup`` (a Ray one passes as it is)."""
    from ember.core._placement import PlacementGroup

    if isinstance(group, PlacementGroup):
        if group._backend_group is None:
            raise ValueError(f"{group!r} was made by the local backend; make placement groups "
                             "after ember.init(backend='ray')")
        return group._backend_group
    return group


def ray_task_options(explicit: Mapping[str, Any], num_returns: Any) -> dict[str, Any]:
    """``.options(...)`` for a Ray remote function, from the options the user set.

    Only explicit options travel: ember's task defaults are Ray's, so leaving the rest out keeps
    Ray's own fast path.
    """
    out = {k: v for k, v in explicit.items() if k in _TASK_PASSTHROUGH and v is not None}
    if is_streaming(num_returns):
        out["num_returns"] = "streaming"
        out["_generator_backpressure_num_objects"] = GENERATOR_BACKPRESSURE
    elif num_returns != 1:
        out["num_returns"] = num_returns
    _placement(explicit, out)
    return out


def ray_actor_options(explicit: Mapping[str, Any]) -> dict[str, Any]:
    """``.options(...)`` for a Ray actor class, from the options the user set.

    An actor that names no ``num_cpus`` gets Ray's default (one CPU to be placed, none held
    while it runs), which is what ember's ``num_cpus=0`` default means on the local backend.
    """
    out = {k: v for k, v in explicit.items()
           if k in _ACTOR_PASSTHROUGH and v is not None and v is not False}
    _placement(explicit, out)
    return out


def uses_placement(explicit: Mapping[str, Any]) -> bool:
    """True when the options place the work by a strategy the node check cannot judge."""
    group = explicit.get("placement_group")
    if group is not None and group != "default":
        return True
    strategy = explicit.get("scheduling_strategy")
    return strategy is not None and strategy not in ("DEFAULT", "SPREAD")


def meta_from_ray_handle(handle: Any) -> ActorMeta:
    """An ``ActorMeta`` rebuilt from what a Ray actor handle knows about its class.

    Used for named actors created by a process that did not record their ember metadata
    (for example by plain Ray code); ``@ember.method(num_returns=...)`` is not visible here.
    """
    methods: dict[str, MethodMeta] = {}
    generators = getattr(handle, "_ray_method_is_generator", {}) or {}
    returns = getattr(handle, "_ray_method_num_returns", {}) or {}
    for name in getattr(handle, "_ray_method_signatures", {}) or {}:
        if name.startswith("__") and name != "__call__":
            continue
        is_gen = bool(generators.get(name))
        count = returns.get(name)
        methods[name] = MethodMeta(
            num_returns="streaming" if is_gen else (1 if count is None else count),
            is_generator=is_gen,
        )
    descriptor = getattr(handle, "_ray_actor_creation_function_descriptor", None)
    class_name = getattr(descriptor, "class_name", None) or "Actor"
    return ActorMeta(class_name=class_name, methods=methods)


# -- resources ----------------------------------------------------------------------------------


def _amount(value: float) -> str:
    return f"{value:g}"


def infeasible_reason(request: Mapping[str, float],
                      nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no alive node can ever hold ``request`` (None when one can).

    The reason names the resource, the amount asked for and what the cluster has, so that the
    message says what to change.
    """
    if not request:
        return None
    for node in nodes:
        if all(node.get(name, 0.0) >= amount for name, amount in request.items()):
            return None
    for name, amount in request.items():
        largest = max((node.get(name, 0.0) for node in nodes), default=0.0)
        if largest < amount:
            total = sum(node.get(name, 0.0) for node in nodes)
            if total == 0:
                return (f"it asks for {name}: {_amount(amount)} and no node of the cluster has "
                        f"any {name} (total 0)")
            return (f"it asks for {name}: {_amount(amount)} but the largest node has "
                    f"{_amount(largest)} (cluster total {_amount(total)})")
    asked = ", ".join(f"{k}: {_amount(v)}" for k, v in sorted(request.items()))
    return f"it asks for {{{asked}}} and no single node has all of that at once"


def gang_infeasible_reason(bundle: Mapping[str, float], count: int, strategy: str,
                           nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why ``count`` bundles can never be reserved with ``strategy`` (None when they can)."""
    per_node = []
    for node in nodes:
        fits = min((math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0),
                   default=count)
        per_node.append(max(fits, 0))
    asked = ", ".join(f"{k}: {_amount(v)}" for k, v in sorted(bundle.items()))
    if strategy == "STRICT_PACK":
        if max(per_node, default=0) >= count:
            return None
        return (f"STRICT_PACK needs {count} x {{{asked}}} on one node, and the largest node "
                f"holds {max(per_node, default=0)}")
    if strategy == "STRICT_SPREAD":
        usable = sum(1 for fits in per_node if fits >= 1)
        if usable >= count:
            return None
        return (f"STRICT_SPREAD needs {count} nodes that each hold {{{asked}}}, and the "
                f"cluster has {usable}")
    if sum(per_node) >= count:
        return None
    return (f"{strategy} needs room for {count} x {{{asked}}}, and the whole cluster holds "
            f"{sum(per_node)}{_limit(bundle, count, nodes)}")


def _limit(bundle: Mapping[str, float], count: int, nodes: Sequence[Mapping[str, float]]) -> str:
    """`` (GPU: the nodes have 0 in all, 1 per member)``: the resource that holds the gang back."""
    for name, amount in sorted(bundle.items()):
        fits = sum(math.floor(node.get(name, 0.0) / amount + 1e-9) for node in nodes)
        if amount > 0 and fits < count:
            have = ", ".join(_amount(node.get(name, 0.0)) for node in nodes) or "none"
            return f" ({name}: {_amount(amount)} per member, and the nodes have {have})"
    return ""


def placement_infeasible_reason(bundles: Sequence[Mapping[str, float]], strategy: str,
                                nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why ``bundles`` can never be reserved with ``strategy`` on ``nodes`` (None when they
    can, or when only an exact packing search could tell: then Ray decides)."""
    first = dict(bundles[0])
    if all(dict(b) == first for b in bundles):
        return gang_infeasible_reason(first, len(bundles), strategy, nodes)
    if strategy == "STRICT_PACK":
        total: dict[str, float] = {}
        for bundle in bundles:
            for name, amount in bundle.items():
                total[name] = total.get(name, 0.0) + amount
        reason = infeasible_reason(total, nodes)
        return None if reason is None else f"STRICT_PACK needs all bundles on one node, and {reason}"
    for i, bundle in enumerate(bundles):
        reason = infeasible_reason(bundle, nodes)
        if reason is not None:
            return f"bundle {i} {reason[3:] if reason.startswith('it ') else reason}"
    if strategy == "STRICT_SPREAD" and len(bundles) > len(nodes):
        return (f"STRICT_SPREAD needs {len(bundles)} nodes, one per bundle, and the cluster has "
                f"{len(nodes)}")
    for name in {n for b in bundles for n in b}:
        wanted = sum(b.get(name, 0.0) for b in bundles)
        have = sum(node.get(name, 0.0) for node in nodes)
        if wanted > have + 1e-9:
            return f"the bundles ask for {name}: {_amount(wanted)} in all and the cluster has " \
                   f"{_amount(have)}"
    return None


def describe_nodes(request: Mapping[str, float], nodes: Sequence[Mapping[str, Any]]) -> str:
    """``node 1a2b3c4d (10.0.0.1, head): CPU 0.5 free of 1; ...`` for the resources named in
    ``request``, from ``ember.nodes()`` entries: which node has what, for a message."""
    parts = []
    for node in nodes:
        total = node.get("Resources", {})
        free = node.get("AvailableResources", total)
        where = node.get("NodeManagerAddress") or "?"
        head = ", head" if node.get("IsHead") else ""
        have = ", ".join(f"{name} {_amount(free.get(name, 0.0))} free of "
                         f"{_amount(total.get(name, 0.0))}" for name in sorted(request))
        parts.append(f"node {str(node.get('NodeID', '?'))[:8]} ({where}{head}): {have}")
    return "; ".join(parts) or "no node"


# -- exceptions -----------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_NAME = re.compile(r"ray::([^\s(]+)\(")


def _clean(text: str) -> str:
    return _ANSI.sub("", text)


def _task_name(text: str) -> str:
    found = _TASK_NAME.search(text)
    return found.group(1) if found else "remote task"


def translate_error(exc: BaseException, *, timeout: float | None = None) -> BaseException:
    """The ember exception for an exception that came out of Ray (others are returned as is).

    A user exception becomes ember's dual ``TaskError`` (an instance of the user's type too);
    Ray's system errors become the ember errors of the same meaning.
    """
    from ray import exceptions as rx

    if isinstance(exc, rx.RayTaskError):
        return _translate_task_error(exc, rx)
    if not isinstance(exc, rx.RayError):
        return exc
    text = _clean(str(exc))
    if isinstance(exc, rx.ActorUnavailableError):
        return ActorUnavailableError(text)
    if isinstance(exc, rx.ActorAlreadyExistsError):
        return ActorAlreadyExistsError(text)
    if isinstance(exc, rx.ObjectStoreFullError):
        return ObjectStoreFullError(text)
    if isinstance(exc, rx.RuntimeEnvSetupError):
        return RuntimeEnvSetupError(text)
    if isinstance(exc, rx.RayActorError):
        return ActorDiedError(text)
    if isinstance(exc, rx.TaskCancelledError):
        return TaskCancelledError(text or "the task was cancelled")
    if isinstance(exc, (rx.WorkerCrashedError, rx.NodeDiedError, rx.LocalRayletDiedError)):
        return WorkerCrashedError(text)
    if isinstance(exc, rx.GetTimeoutError):
        after = "" if timeout is None else f" after {timeout} s"
        return GetTimeoutError(f"ember.get timed out{after}: the value is not ready yet ({text})")
    if isinstance(exc, rx.ObjectLostError):
        return ObjectLostError(text)
    if isinstance(exc, rx.OutOfMemoryError):
        return OutOfMemoryError(text)
    if isinstance(exc, (rx.TaskUnschedulableError, rx.ActorUnschedulableError)):
        return ResourceError(text)
    return BackendError(f"{type(exc).__name__}: {text}")


def _translate_task_error(exc: Any, rx: Any) -> BaseException:
    cause = exc.__dict__.get("cause", None)
    text = _remote_traceback(_clean(str(exc)))
    if type(cause) is rx.RayError:
        # Ray's stand-in for a user exception that could not be pickled: keep its message.
        cause = EmberError(_clean(str(cause)))
    elif isinstance(cause, rx.RayError):
        # Remote code called ray directly (or Ray failed it, e.g. an interrupt by ray.cancel).
        cause = translate_error(cause)
    if isinstance(cause, (TaskError, ResourceError)):
        # Already ember's: a nested task's error, or the ResourceError of an infeasible
        # request (RayBackend._failed) passes through unchanged.
        return cause
    if isinstance(cause, TaskCancelledError):
        # Ray's RayTaskError(TaskCancelledError) of a call cancelled while it ran: the same
        # dual class as on the local backend.
        return TaskError.wrap(cause, _task_name(text), text)
    if cause is None:
        return TaskError(_task_name(text), text, None)
    return TaskError.wrap(cause, _task_name(text), text)


def _remote_traceback(text: str) -> str:
    """Ray's ``ray::f() (pid=.., ip=..)`` header, then the frames as Python prints them."""
    header, _, frames = text.partition("\n")
    if not frames or frames.startswith("Traceback"):
        return text
    return f"{header}\nTraceback (most recent call last):\n{frames}"


def client_limit(exc: RuntimeError) -> Exception:
    """A ``BackendError`` for what the Ray client cannot do (``exc`` itself otherwise)."""
    if "Ray Client" not in str(exc):
        return exc
    return BackendError(
        f"{exc} ember cannot offer this through a ray:// address; run the driver on a node of "
        "the cluster instead (ember.init(backend='ray', address='auto')), for example as a "
        "Ray job (`ray job submit -- python main.py`)"
    )
