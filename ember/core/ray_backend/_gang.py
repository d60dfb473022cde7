"""Gangs: N actors that are placed and started together (train workers, RL learners).

On the ray backend a gang is one placement group with a bundle per member, reserved all at once
(``PACK`` by default, ``STRICT_PACK`` to keep it on one node); on the local backend it is just
N actors, checked up front against what the machine has.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ember.core._options import resource_request
from ember.core._remote import ActorClass, ActorHandle
from ember.errors import ResourceError

STRATEGIES = ("PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD")


@dataclass
class Gang:
    """The members of a gang, in order; ``placement_group`` is Ray's group (None when local).

    Tasks can join a member's bundle with
    ``.options(placement_group=gang.placement_group, placement_group_bundle_index=i)``.
    """

    actors: list[ActorHandle]
    placement_group: Any = None
    _backend: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.actors)

    def __iter__(self) -> Iterator[ActorHandle]:
        return iter(self.actors)

    def __getitem__(self, index: int) -> ActorHandle:
        return self.actors[index]

    def shutdown(self) -> None:
        """Kill every member and give the reserved resources back."""
        import ember

        for actor in self.actors:
            ember.kill(actor)
        if self.placement_group is not None and self._backend is not None:
            self._backend.remove_gang(self.placement_group)
            self.placement_group = None


def create_gang(
    actor_class: ActorClass,
    count: int,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    resources_per_member: Mapping[str, float] | None = None,
    strategy: str = "PACK",
    timeout: float | None = 120.0,
) -> Gang:
    """Start ``count`` actors of ``actor_class`` together, each with ``resources_per_member``.

    ``resources_per_member`` uses Ray's bundle keys (``{"CPU": 1, "GPU": 1, "node_b": 1}``); it
    defaults to what the actor class asks for, or one CPU. Raises ``ResourceError`` at once
    when the cluster can never hold the gang, and ``GetTimeoutError`` when the reservation is
    not granted within ``timeout`` seconds. ::

        gang = create_gang(Learner, 4, resources_per_member={"CPU": 1, "GPU": 1})
        ember.get([member.setup.remote(rank) for rank, member in enumerate(gang)])
        gang.shutdown()
    """
    from ember.core._api import current_backend
    from ember.core.ray_backend._backend import RayBackend

    if not isinstance(actor_class, ActorClass):
        raise TypeError(f"create_gang() takes an @ember.remote class, got {actor_class!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count={count!r} must be an integer >= 1")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} must be one of {', '.join(STRATEGIES)}")
    bundle = {k: float(v) for k, v in (resources_per_member or {}).items() if v}
    if not bundle:
        bundle = resource_request(actor_class._options) or {"CPU": 1.0}
    backend = current_backend()
    if isinstance(backend, RayBackend):
        actors, group = backend.create_gang(actor_class, count, tuple(args), dict(kwargs or {}),
                                            bundle, strategy, timeout)
        return Gang(actors, group, backend)
    return _local_gang(actor_class, count, tuple(args), dict(kwargs or {}), bundle)


def _local_gang(actor_class: ActorClass, count: int, args: tuple[Any, ...],
                kwargs: dict[str, Any], bundle: dict[str, float]) -> Gang:
    import ember

    total = ember.cluster_resources()
    for name, amount in bundle.items():
        if amount * count > total.get(name, 0.0):
            raise ResourceError(
                f"a gang of {count} {actor_class.meta.class_name} actors can never start: it "
                f"asks for {name}: {amount * count:g} in all and the machine has "
                f"{total.get(name, 0.0):g}. Ask for fewer or smaller members"
            )
    options = {
        "num_cpus": bundle.get("CPU", 0.0), "num_gpus": bundle.get("GPU", 0.0),
        "resources": {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")} or None,
    }
    variant = actor_class.options(**options)
    return Gang([variant.remote(*args, **kwargs) for _ in range(count)])
