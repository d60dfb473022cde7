"""Which replica takes a request: a pure policy, events in and decisions out.

Power of two choices on ongoing requests, never past a replica's ``max_ongoing_requests``; with a
multiplexed model id, a replica that has the model (or is loading it) wins, the least loaded of
those; else the replica with the fewest models, and among equally full ones the replica whose
least recently used model was used longest ago (what it evicts is then the oldest model in the
whole pool, as if the replicas shared one LRU). ``choose`` returns ``None`` when every replica is
full: the caller answers 503 (HTTP) or waits for a slot (handles), never queues without bound.

Ray 2.5's faults avoided here: the router learns about a model the moment it sends a request for
it (no 1 s delay), and a hot model spills over to another replica once its holders are full
(``spill_load``) instead of pinning every request to one replica.

Time is passed in (``now``); randomness comes from the ``rng`` given at construction.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

ReplicaId = Hashable


@dataclass
class _ReplicaState:
    ongoing: int = 0
    reported_models: frozenset[str] = frozenset()
    # model id -> when this router last sent it here (the replica has it or is loading it).
    sent_models: dict[str, float] = field(default_factory=dict)
    # How many models the replica keeps (None: not told), and the models this router expects
    # it evicted to make room for ones it sent there (model id -> when), until reports show it.
    model_slots: int | None = None
    evicted: dict[str, float] = field(default_factory=dict)


class Router:
    """Per-caller routing state for one deployment.

    ``max_ongoing_requests`` caps requests this router has in flight on one replica.
    ``spill_load`` (default: the cap) is the load at which a replica holding the requested model
    counts as busy, so the next request for that model goes to another replica.
    ``model_memory_s`` is how long a model this router sent to a replica is remembered there
    without the replica reporting it (reports lag behind; evictions show up in later reports).
    ``report_lag_s`` bounds how far behind a report may be: sends older than that which a
    report leaves out were evicted.
    """

    def __init__(
        self,
        max_ongoing_requests: int,
        *,
        rng: random.Random | None = None,
        spill_load: int | None = None,
        model_memory_s: float = 10.0,
        report_lag_s: float = 1.0,
    ) -> None:
        if max_ongoing_requests < 1:
            raise ValueError(f"max_ongoing_requests={max_ongoing_requests} must be >= 1")
        self.max_ongoing_requests = max_ongoing_requests
        self.spill_load = max_ongoing_requests if spill_load is None else spill_load
        self.model_memory_s = model_memory_s
        self.report_lag_s = report_lag_s
        self._rng = rng or random.Random()
        self._replicas: dict[ReplicaId, _ReplicaState] = {}

    # -- events ------------------------------------------------------------------------------

    def set_replicas(self, replica_ids: Iterable[ReplicaId]) -> None:
        """The live replicas now; keeps what is known about those that stay."""
        wanted = list(replica_ids)
        self._replicas = {r: self._replicas.get(r) or _ReplicaState() for r in wanted}

    def remove_replica(self, replica_id: ReplicaId) -> None:
        """A replica died or left: stop sending to it at once."""
        self._replicas.pop(replica_id, None)

    def report_slots(self, slots: Mapping[ReplicaId, int | None]) -> None:
        """How many models each replica keeps (``max_num_models_per_replica``)."""
        for replica_id, count in slots.items():
            state = self._replicas.get(replica_id)
            if state is not None:
                state.model_slots = count

    def report_models(self, models: Mapping[ReplicaId, Iterable[str]],
                      now: float | None = None) -> None:
        """Models each replica says it holds or is loading (from the controller's latest poll).

        With ``now``, what this router sent there more than ``report_lag_s`` ago is known to
        the report: a model sent then and missing now was evicted, and is forgotten at once."""
        for replica_id, ids in models.items():
            state = self._replicas.get(replica_id)
            if state is not None:
                state.reported_models = frozenset(ids)
                if now is not None:
                    state.sent_models = {m: t for m, t in state.sent_models.items()
                                         if now - t < self.report_lag_s}

    def on_sent(self, replica_id: ReplicaId, now: float, model_id: str | None = None) -> None:
        state = self._replicas.get(replica_id)
        if state is None:
            return
        state.ongoing += 1
        if not model_id:
            return
        held = self.models_on(replica_id, now)
        if model_id not in held and state.model_slots is not None and (
            len(held) >= state.model_slots
        ):
            # The replica will evict its least recently used model to load this one: expect
            # that at once, or requests for the evicted model would keep coming here.
            victim = min(held, key=lambda m: state.sent_models.get(m, float("-inf")))
            state.sent_models.pop(victim, None)
            state.evicted[victim] = now
        state.evicted.pop(model_id, None)
        state.sent_models[model_id] = now

    def on_done(self, replica_id: ReplicaId) -> None:
        state = self._replicas.get(replica_id)
        if state is not None and state.ongoing > 0:
            state.ongoing -= 1

    # -- queries -----------------------------------------------------------------------------

    @property
    def replica_ids(self) -> list[ReplicaId]:
        return list(self._replicas)

    def ongoing(self, replica_id: ReplicaId) -> int:
        state = self._replicas.get(replica_id)
        return 0 if state is None else state.ongoing

    def models_on(self, replica_id: ReplicaId, now: float) -> frozenset[str]:
        """What this router believes ``replica_id`` holds or is loading."""
        state = self._replicas[replica_id]
        recent = {m for m, t in state.sent_models.items() if now - t <= self.model_memory_s}
        gone = {m for m, t in state.evicted.items() if now - t < self.report_lag_s}
        return (state.reported_models | recent) - gone

    def total_ongoing(self) -> int:
        return sum(s.ongoing for s in self._replicas.values())

    def choose(self, now: float, model_id: str | None = None) -> ReplicaId | None:
        """The replica for the next request, or ``None`` when every replica is full."""
        free = [r for r, s in self._replicas.items() if s.ongoing < self.max_ongoing_requests]
        if not free:
            return None
        if model_id:
            return self._choose_for_model(free, model_id, now)
        return self._two_choices(free)

    def _two_choices(self, candidates: list[ReplicaId]) -> ReplicaId:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.sample(candidates, 2)
        if self._replicas[second].ongoing < self._replicas[first].ongoing:
            return second
        return first

    def _choose_for_model(self, free: list[ReplicaId], model_id: str, now: float) -> ReplicaId:
        self._forget_old(now)
        holders = [r for r in free if model_id in self.models_on(r, now)]
        idle_holders = [r for r in holders if self._replicas[r].ongoing < self.spill_load]
        if idle_holders:
            return self._least_loaded(idle_holders)
        others = [r for r in free if r not in holders]
        if others:
            fewest = min(len(self.models_on(r, now)) for r in others)
            emptiest = [r for r in others if len(self.models_on(r, now)) == fewest]
            if len(emptiest) > 1:
                # As full as each other: load where the model it pushes out (that replica's
                # least recently used) was used longest ago, as one LRU over all replicas would.
                oldest = min(self._stalest_use(r, now) for r in emptiest)
                emptiest = [r for r in emptiest if self._stalest_use(r, now) == oldest]
            return self._least_loaded(emptiest)
        return self._least_loaded(holders)

    def _stalest_use(self, replica_id: ReplicaId, now: float) -> float:
        """When this router last sent the least recently sent model ``replica_id`` holds
        (``-inf`` for one it never sent there: used by others, or long ago)."""
        state = self._replicas[replica_id]
        models = self.models_on(replica_id, now)
        if not models:
            return float("inf")
        return min(state.sent_models.get(m, float("-inf")) for m in models)

    def _least_loaded(self, candidates: list[ReplicaId]) -> ReplicaId:
        low = min(self._replicas[r].ongoing for r in candidates)
        best = [r for r in candidates if self._replicas[r].ongoing == low]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _forget_old(self, now: float) -> None:
        for state in self._replicas.values():
            stale = [m for m, t in state.sent_models.items() if now - t > self.model_memory_s]
            for m in stale:
                del state.sent_models[m]
            for m in [m for m, t in state.evicted.items() if now - t >= self.report_lag_s]:
                del state.evicted[m]
