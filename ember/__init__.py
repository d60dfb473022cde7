"""ember: scale AI workloads from one machine to a Ray cluster.

The core API (tasks, actors, object references) lives here; the libraries are attributes that
load on first use: ``ember.data``, ``ember.train``, ``ember.serve``, ``ember.rl``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ember import errors
from ember._version import __version__ as __version__
from ember.core._api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_runtime_context,
    init,
    is_initialized,
    kill,
    put,
    shutdown,
    wait,
)
from ember.core._context import RuntimeContext
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.core._remote import ActorClass, ActorHandle, RemoteFunction, method, remote

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "RuntimeContext",
    "available_resources",
    "cancel",
    "cluster_resources",
    "errors",
    "get",
    "get_actor",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "put",
    "remote",
    "shutdown",
    "wait",
]

_LAZY_LIBRARIES = ("data", "train", "serve", "rl")


def __getattr__(name: str) -> Any:
    if name in _LAZY_LIBRARIES:
        module = importlib.import_module(f"ember.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
