"""Validation of ``@remote`` / ``.options(...)`` arguments: pure, with messages that say the fix."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ember.core import _runtime_env

TASK_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "max_retries", "retry_exceptions", "num_returns",
    "name", "memory", "scheduling_strategy", "runtime_env", "placement_group",
    "placement_group_bundle_index", "enable_task_events",
}
ACTOR_OPTIONS = {
    "num_cpus", "num_gpus", "resources", "name", "namespace", "lifetime", "max_restarts",
    "max_task_retries", "max_concurrency", "memory", "scheduling_strategy", "runtime_env",
    "get_if_exists", "placement_group", "placement_group_bundle_index", "enable_task_events",
}
METHOD_OPTIONS = {"num_returns", "name", "max_task_retries", "concurrency_group",
                  "enable_task_events"}
# enable_task_events (Ray's switch for recording a task's events) is accepted and has no
# effect: the local backend records no task events yet.

TASK_DEFAULTS: dict[str, Any] = {
    "num_cpus": 1.0, "num_gpus": 0.0, "resources": None, "max_retries": 3,
    "retry_exceptions": False, "num_returns": 1,
}
ACTOR_DEFAULTS: dict[str, Any] = {
    # Like Ray: an actor holds no CPU while it lives unless it asks for one.
    "num_cpus": 0.0, "num_gpus": 0.0, "resources": None, "name": None, "namespace": None,
    "lifetime": None, "max_restarts": 0, "max_task_retries": 0, "max_concurrency": None,
    "get_if_exists": False,
}


def _unknown(kind: str, key: str, allowed: set[str]) -> ValueError:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(
        f"unknown {kind} option {key!r}{hint}; known: {', '.join(sorted(allowed))}"
    )


def _number(key: str, value: Any, *, integer: bool = False, minimum: float = 0) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{key}={value!r} must be {kind} >= {minimum}")


def _resources(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ValueError(f"resources={value!r} must be a dict of name -> amount")
    for name, amount in value.items():
        if name in ("CPU", "GPU"):
            raise ValueError(
                f"resources may not name {name!r}: use num_cpus / num_gpus instead"
            )
        _number(f"resources[{name!r}]", amount)


def _strategy(value: Any) -> None:
    from ember.core._placement import (
        NodeAffinitySchedulingStrategy,
        PlacementGroupSchedulingStrategy,
    )

    if value is None or value in ("DEFAULT", "SPREAD") or isinstance(
            value, (NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy)):
        return
    raise ValueError(
        f"scheduling_strategy={value!r} must be 'DEFAULT', 'SPREAD', a "
        "PlacementGroupSchedulingStrategy or a NodeAffinitySchedulingStrategy (from "
        "ember.util.scheduling_strategies)")


def validate_task_options(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key not in TASK_OPTIONS:
            raise _unknown("task", key, TASK_OPTIONS)
        if key in ("num_cpus", "num_gpus", "memory") and value is not None:
            _number(key, value)
        elif key == "max_retries":
            _number(key, value, integer=True, minimum=-1)
        elif key == "resources":
            _resources(value)
        elif key == "num_returns":
            if value not in ("streaming", "dynamic"):
                _number(key, value, integer=True, minimum=0)
        elif key == "runtime_env":
            _runtime_env.validate(value)
        elif key == "scheduling_strategy":
            _strategy(value)
        elif key == "retry_exceptions" and not (
            isinstance(value, bool)
            or (isinstance(value, (list, tuple))
                and all(isinstance(t, type) and issubclass(t, BaseException) for t in value))
        ):
            raise ValueError(
                f"retry_exceptions={value!r} must be True/False or a list of exception types"
            )


def validate_actor_options(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key not in ACTOR_OPTIONS:
            raise _unknown("actor", key, ACTOR_OPTIONS)
        if key in ("num_cpus", "num_gpus", "memory") and value is not None:
            _number(key, value)
        elif key in ("max_restarts", "max_task_retries"):
            _number(key, value, integer=True, minimum=-1)
        elif key == "max_concurrency" and value is not None:
            _number(key, value, integer=True, minimum=1)
        elif key == "resources":
            _resources(value)
        elif key == "runtime_env":
            _runtime_env.validate(value)
        elif key == "scheduling_strategy":
            _strategy(value)
        elif key == "lifetime" and value not in (None, "detached", "non_detached"):
            raise ValueError(f"lifetime={value!r} must be None, 'detached' or 'non_detached'")
        elif key in ("name", "namespace") and value is not None:
            if not isinstance(value, str):
                raise TypeError(f"{key}={value!r} must be a string (a {type(value).__name__} "
                                "was given)")
            if not value:
                raise ValueError(f"{key}={value!r} must be a non-empty string")


def validate_method_options(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key not in METHOD_OPTIONS:
            raise _unknown("actor method", key, METHOD_OPTIONS)
        if key == "num_returns" and value not in ("streaming", "dynamic"):
            _number(key, value, integer=True, minimum=0)


def resource_request(options: Mapping[str, Any]) -> dict[str, float]:
    """The resources an invocation asks for, as one flat dict (zero amounts left out)."""
    request: dict[str, float] = {}
    cpus = options.get("num_cpus")
    gpus = options.get("num_gpus")
    if cpus:
        request["CPU"] = float(cpus)
    if gpus:
        request["GPU"] = float(gpus)
    for name, amount in (options.get("resources") or {}).items():
        if amount:
            request[name] = float(amount)
    memory = options.get("memory")
    if memory:  # bytes, a resource as in Ray: it limits what runs at once, it caps nothing
        request["memory"] = float(memory)
    return request
