"""``get_node_ip_address``: where the calling code runs."""

from __future__ import annotations


def get_node_ip_address() -> str:
    """The IP address of the node this code runs on, as Ray's ``ray.util`` function gives it.

    With the local backend (one machine) it is ``127.0.0.1``, the address in that node's
    ``node:127.0.0.1`` resource; with the ray backend it is Ray's answer. Starts no runtime.
    """
    from ember.core import LOCAL_NODE_IP, _api
    from ember.core.ray_backend import inside_ray_worker

    backend = _api._backend
    if backend is not None:
        return backend.node_ip_address()
    if inside_ray_worker():
        from ray.util import get_node_ip_address as ray_node_ip_address

        return str(ray_node_ip_address())
    return LOCAL_NODE_IP
