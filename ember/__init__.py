"""ember: scale AI workloads from one machine to a Ray cluster.

The core API (tasks, actors, object references) lives here, under Ray's names: ``ember.actor``
and ``ember.exceptions`` are Ray's ``ray.actor`` and ``ray.exceptions``. The libraries and
``ember.util`` are attributes that load on first use: ``ember.data``, ``ember.train``,
``ember.serve``, ``ember.rl``; so are ``ember.runtime_env`` (``RuntimeEnv``),
``ember.job_config`` (``JobConfig``), ``ember.dag`` and Ray 2.5's paths ``ember.air`` and
``ember.rllib``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ember import actor, errors, exceptions
from ember._version import __version__ as __version__
from ember.core._api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    get_runtime_context,
    init,
    is_initialized,
    kill,
    nodes,
    put,
    shutdown,
    timeline,
    wait,
)
from ember.core._context import RuntimeContext
from ember.core._refs import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator
from ember.core._remote import ActorClass, ActorHandle, RemoteFunction, method, remote

__all__ = [
    "ActorClass",
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "RuntimeContext",
    "actor",
    "available_resources",
    "cancel",
    "cluster_resources",
    "errors",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]

_LAZY_LIBRARIES = ("data", "train", "serve", "rl", "util")
# Ray's ray.job_config, ray.runtime_env, ray.dag and 2.5's ray.air and ray.rllib paths
_LAZY_MODULES = ("job_config", "runtime_env", "air", "dag", "rllib")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        value = importlib.import_module(f"ember.{name}")
        globals()[name] = value
        return value
    if name in _LAZY_LIBRARIES:
        try:
            module = importlib.import_module(f"ember.{name}")
        except ModuleNotFoundError as exc:  # a library whose extra is not installed
            if exc.name is None or exc.name.split(".")[0] == "ember":
                raise
            raise ModuleNotFoundError(
                f"ember.{name} needs {exc.name!r}, which is not installed: "
                f"pip install 'ember-scale[{name}]'", name=exc.name) from exc
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
