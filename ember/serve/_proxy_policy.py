"""Where serve's HTTP proxies run, and what to do when the cluster changes under them.

Pure: node lists and proxy states in, decisions out. The controller checks its proxies every
``PROXY_CHECK_PERIOD_S`` and carries out ``plan_proxies``: a proxy that died on a node still
alive starts again on its port (clients keep their address), a node that left takes its proxy
with it, and with ``EveryNode`` a node that joins after ``serve.start`` gets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROXY_LOCATIONS = ("HeadOnly", "EveryNode", "Disabled")


def proxy_nodes(location: str, nodes: list[dict[str, Any]], driver_node: str
                ) -> list[str | None]:
    """The nodes that get an HTTP proxy (``None``: one proxy, wherever; there is one node)."""
    if location not in PROXY_LOCATIONS:
        raise ValueError(f"proxy_location={location!r} must be one of "
                         f"{', '.join(map(repr, PROXY_LOCATIONS))}")
    if location == "Disabled":
        return []
    if len(nodes) <= 1:
        return [None]
    if location == "EveryNode":
        return every_node(nodes)
    head = next((n["NodeID"] for n in nodes if n.get("IsHead")), driver_node)
    return [str(head)]


def every_node(nodes: list[dict[str, Any]]) -> list[str | None]:
    """Each node's id, the head's first (its proxy is the main one)."""
    return [str(n["NodeID"]) for n in sorted(nodes, key=lambda n: not n.get("IsHead"))]


@dataclass(frozen=True)
class ProxyPlan:
    restart: tuple[str, ...] = ()  # proxies that are gone, on nodes still alive: same port
    drop: tuple[str, ...] = ()  # proxies whose node left the cluster
    start: tuple[str, ...] = ()  # nodes (ids) that joined and get a proxy of their own

    def __bool__(self) -> bool:
        return bool(self.restart or self.drop or self.start)


def plan_proxies(location: str, alive_nodes: list[dict[str, Any]], homes: dict[str, str | None],
                 gone: set[str]) -> ProxyPlan:
    """What to change, given the nodes alive now, where each proxy runs (``homes``: the
    controller's key for a proxy, a node id or ``""`` for the one unpinned proxy, -> the node
    it runs on, ``None`` when not known) and the proxies that failed their check (``gone``).

    A proxy whose node is not alive is dropped, not restarted; a gone proxy on a node that is
    still alive (or unknown) restarts; ``EveryNode`` adds a proxy on each alive node that has
    none, once it knows where every proxy runs.
    """
    alive = {str(n["NodeID"]) for n in alive_nodes}
    drop = tuple(key for key, node in homes.items() if node is not None and node not in alive)
    restart = tuple(key for key in homes if key in gone and key not in drop)
    start: tuple[str, ...] = ()
    served = {node for key, node in homes.items() if key not in drop}
    if location == "EveryNode" and None not in served:  # else: wait until each is placed
        start = tuple(node for node in every_node(alive_nodes)
                      if node is not None and node not in served)
    return ProxyPlan(restart, drop, start)
