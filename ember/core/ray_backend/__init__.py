"""The ``ray`` backend: the same ember programs on a Ray cluster.

``ember.init(backend="ray", address=None | "auto" | "ray://host:10001", **ray_init_kwargs)``
maps the core API onto Ray Core: remote functions, actors, object references, streaming
generators, and placement groups (``ember.util.placement_group``). Ray's exceptions are translated
into ember's at the boundary. Importing this package does not import ``ray``: ``RayBackend.start``
does.

Code running inside a Ray task or actor uses the Ray it runs in: ``ember.core._api`` asks
``inside_ray_worker()`` before it would start a local runtime there.
"""

from ember.core.ray_backend._backend import RayBackend, inside_ray_worker

__all__ = ["RayBackend", "inside_ray_worker"]
