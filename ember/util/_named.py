"""``list_named_actors``: the names of the live named actors, as Ray's
``ray.util.list_named_actors``."""

from __future__ import annotations

from typing import Any


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of the named actors that are alive (or starting, or restarting).

    By default the names in this job's namespace (``ember.get_runtime_context().namespace``),
    as a list of strings; with ``all_namespaces=True`` every one, as a list of
    ``{"name": ..., "namespace": ...}`` dicts. Works in the driver and inside tasks and actors::

        Counter.options(name="counter").remote()
        list_named_actors()        # ['counter']
        list_named_actors(True)    # [{'name': 'counter', 'namespace': 'default'}]
    """
    from ember.core._api import current_backend

    backend = current_backend()
    named = backend.named_actors()
    if all_namespaces:
        return [{"name": name, "namespace": namespace} for namespace, name in named]
    current = backend.runtime_context().namespace
    return [name for namespace, name in named if namespace == current]
