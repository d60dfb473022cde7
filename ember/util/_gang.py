"""Gangs: N actors that are placed and started together (train workers, RL learners), or not
at all.

A gang is one placement group with a bundle per member, reserved all at once, then one actor in
each bundle. On a busy cluster no member starts (and holds resources the others wait for) until
every member has room. On the local backend the placement group is the up-front check that the
machine can hold every member.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ember
from ember.core._placement import (
    STRATEGIES,
    PlacementGroup,
    PlacementGroupSchedulingStrategy,
    placement_group,
    remove_placement_group,
)
from ember.core._remote import ActorClass, ActorHandle
from ember.core.ray_backend._mapping import describe_nodes
from ember.errors import GetTimeoutError

logger = logging.getLogger("ember")

# Between the warnings that a gang is still waiting for room, after the first one.
WARN_EVERY_S = 60.0


@dataclass
class Gang:
    """The members of a gang, in order, and the placement group that holds their resources.

    Tasks can join a member's bundle with ``.options(scheduling_strategy=
    PlacementGroupSchedulingStrategy(gang.placement_group, placement_group_bundle_index=i))``.
    """

    actors: list[ActorHandle]
    placement_group: PlacementGroup | None = None

    def __len__(self) -> int:
        return len(self.actors)

    def __iter__(self) -> Iterator[ActorHandle]:
        return iter(self.actors)

    def __getitem__(self, index: int) -> ActorHandle:
        return self.actors[index]

    def shutdown(self) -> None:
        """Kill every member and give the reserved resources back."""
        actors, self.actors = self.actors, []
        for actor in actors:
            try:
                ember.kill(actor)
            except Exception:  # already dead or the runtime is gone: nothing left to stop
                pass
        group, self.placement_group = self.placement_group, None
        if group is not None:
            remove_placement_group(group)


def member_options(bundle: Mapping[str, float]) -> dict[str, Any]:
    """Actor options that ask for exactly ``bundle`` (Ray's bundle keys)."""
    options: dict[str, Any] = {"num_cpus": bundle.get("CPU", 0.0),
                               "num_gpus": bundle.get("GPU", 0.0)}
    if bundle.get("memory"):
        options["memory"] = bundle["memory"]
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    options["resources"] = custom or None
    return options


def create_gang(
    actor_class: ActorClass,
    count: int,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    resources_per_member: Mapping[str, float] | None = None,
    strategy: str = "PACK",
    timeout: float | None = 120.0,
    grace_s: float = 10.0,
) -> Gang:
    """Start ``count`` actors of ``actor_class`` together, each holding ``resources_per_member``.

    ``resources_per_member`` uses Ray's bundle keys (``{"CPU": 1, "GPU": 1, "node_b": 1}``); it
    defaults to what the actor class asks for, or one CPU (members that ask for nothing at all
    need no reservation and start at once). ``strategy`` places the bundles
    (``PACK``, ``SPREAD``, ``STRICT_PACK``, ``STRICT_SPREAD``). Raises ``ResourceError`` at once
    when the nodes can never hold the gang. While the cluster is too busy, it logs a warning
    after ``grace_s`` seconds (and every minute after) that names the missing resource and what
    each node has free, and raises ``GetTimeoutError`` after ``timeout`` seconds (``None``:
    wait as long as it takes). ::

        gang = create_gang(Learner, 4, resources_per_member={"CPU": 1, "GPU": 1})
        ember.get([member.setup.remote(rank) for rank, member in enumerate(gang)])
        gang.shutdown()
    """
    from ember.core._options import resource_request

    if not isinstance(actor_class, ActorClass):
        raise TypeError(f"create_gang() takes an @ember.remote class, got {actor_class!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count={count!r} must be an integer >= 1")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} must be one of {', '.join(STRATEGIES)}")
    if resources_per_member is None:
        bundle = resource_request(actor_class._options) or {"CPU": 1.0}
    else:
        bundle = {k: float(v) for k, v in resources_per_member.items() if v}
    member = actor_class.options(**member_options(bundle))
    if not bundle:  # members that hold nothing: nothing to reserve, nothing to wait for
        return Gang([member.remote(*args, **dict(kwargs or {})) for _ in range(count)])
    what = f"a gang of {count} {actor_class.meta.class_name} actors"
    group = placement_group([dict(bundle) for _ in range(count)], strategy=strategy)
    actors: list[ActorHandle] = []
    try:
        await_placement(group, what, timeout=timeout, grace_s=grace_s)
        for index in range(count):
            strategy_i = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
            actors.append(member.options(scheduling_strategy=strategy_i).remote(
                *args, **dict(kwargs or {})))
    except BaseException:
        Gang(actors, group).shutdown()
        raise
    return Gang(actors, group)


def await_placement(group: PlacementGroup, what: str, *, timeout: float | None,
                    grace_s: float, clock: Any = time.monotonic) -> None:
    """Wait until ``group`` is reserved; say what is missing after ``grace_s`` seconds, and
    raise ``GetTimeoutError`` (naming it too) after ``timeout`` seconds."""
    started = clock()
    step = max(grace_s, 0.001)
    while True:
        if timeout is not None:
            step = min(step, max(0.001, started + timeout - clock()))
        if group.wait(step):
            return
        waited = clock() - started
        request = group.bundle_specs[0] if group.bundle_count else {}
        message = (f"{what} ({group.bundle_count} x {request}, {group.strategy}) has waited "
                   f"{waited:.0f} s for room; free now: {describe_nodes(request, ember.nodes())}")
        if timeout is not None and waited >= timeout:
            raise GetTimeoutError(f"{message}. Free those resources (stop other work), ask for "
                                  "less, or add nodes")
        logger.warning("%s. It starts once every member has room; nothing is held meanwhile",
                       message)
        step = WARN_EVERY_S
