"""The executor's admission rule: which operator may start its next task, and how big each actor
pool should be. Pure: a snapshot of the executor's state in, a decision out; no clock, no
threads, no ember calls, so ``tests/data/test_admission.py`` checks it exhaustively.

The rule, in order:

1. Downstream first: the operator nearest the consumer that can start a task does, so blocks
   already in flight are finished before new ones are read.
2. CPU slots, node by node: a request is placed on one node, so what counts is what each node
   can hold, never the cluster's total (two nodes with half a CPU free each cannot run a 1-CPU
   task). Actor pools hold ``num_cpus`` per actor while they live, placed on the nodes largest
   request first; task operators share what is left on each node, each within its own cap when
   it has one (``concurrency=n``). When no node has room for one task's request (an actor pool
   as large as the machine, or a trainer's workers holding part of every node), task operators
   still get one *reserved* slot: one task at a time, submitted to the core with ``num_cpus=0``
   so that it never waits behind the work it feeds. This is the fix for Ray 2.5's hang with
   ``ActorPoolStrategy(size=2)`` on a 2-CPU machine, and for a dataset feeding a train run on
   two 1-CPU nodes.
3. Memory: bytes in flight (blocks queued between operators, inputs held by running tasks and
   the estimated outputs of running tasks) plus the new task's estimated output must fit the
   budget. Sources must also leave room for one output block of every operator downstream of
   them, so the pipeline can always drain.
4. Liveness: when nothing runs and the consumer has nothing to take, the most downstream
   operator with input starts one task even over budget (a single block larger than the budget
   still goes through, one at a time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Compute = Literal["tasks", "actors"]


@dataclass(frozen=True)
class OperatorView:
    """What the policy needs to know about one operator (upstream operators come first)."""

    compute: Compute
    is_source: bool
    has_input: bool  # a task could start now: a read task left, or an input block queued
    running: int  # tasks (or actor calls) in flight
    num_cpus: float = 1.0  # per task, or per actor for an actor pool
    est_output_bytes: int | None = None  # mean output block size so far (None: none finished)
    next_input_bytes: int = 0  # size of the block the next task would consume
    input_done: bool = False  # no more input will ever arrive
    actors_alive: int = 0
    min_actors: int = 0
    max_actors: int = 0
    max_running: int | None = None  # a task operator's concurrency cap (concurrency=n)
    # calls in flight per actor of a pool (ActorPoolStrategy's max_tasks_in_flight_per_actor);
    # None: the policy's actor_tasks_in_flight
    tasks_per_actor: int | None = None


@dataclass(frozen=True)
class Snapshot:
    operators: tuple[OperatorView, ...]
    bytes_in_flight: int
    total_cpus: float
    outputs_ready: int = 0  # blocks waiting for the consumer
    node_cpus: tuple[float, ...] = ()  # CPUs each node offers; () means one node of total_cpus

    @property
    def nodes(self) -> tuple[float, ...]:
        return self.node_cpus or (self.total_cpus,)


@dataclass(frozen=True)
class TaskSlots:
    """How many tasks the task operators may run together, and the CPUs each asks the core for."""

    limit: int
    num_cpus: float
    reserved: bool  # True: the pools hold every CPU; tasks run one at a time with num_cpus=0


def actor_cpus(operators: Sequence[OperatorView]) -> list[float]:
    """The CPUs of every pool actor alive, one entry per actor."""
    return [op.num_cpus for op in operators if op.compute == "actors"
            for _ in range(op.actors_alive)]


def node_room(node_cpus: Sequence[float], requests: Sequence[float]) -> list[float]:
    """What each node has left once ``requests`` are placed, largest first, each on the first
    node with room for it (one that fits nowhere is charged to the node with the most left:
    it runs somewhere, and planning must not count its CPUs twice)."""
    free = [float(c) for c in node_cpus]
    for need in sorted(requests, reverse=True):
        if need <= 0 or not free:
            continue
        room = [i for i, f in enumerate(free) if f + 1e-9 >= need]
        i = room[0] if room else max(range(len(free)), key=free.__getitem__)
        free[i] = max(0.0, free[i] - need)
    return free


def fits(node_free: Sequence[float], requests: Sequence[float]) -> bool:
    """Whether every request fits on the nodes, each request on one node."""
    free = [float(c) for c in node_free]
    for need in sorted(requests, reverse=True):
        if need <= 0:
            continue
        room = [i for i, f in enumerate(free) if f + 1e-9 >= need]
        if not room:
            return False
        free[room[0]] -= need
    return True


def node_capacities(node_totals: Sequence[float], node_free: Sequence[float],
                    excluded: float) -> tuple[float, ...]:
    """The CPUs each node offers an execution.

    With nothing excluded, each node's total. ``excluded`` CPUs are held by other work for the
    whole execution (a trainer's workers): what a node does not have free when the execution
    starts is taken to be that work, on that node; what ``excluded`` names beyond it comes off
    the nodes with the most left.
    """
    totals = [max(0.0, float(t)) for t in node_totals]
    if excluded <= 0:
        return tuple(totals)
    caps = [min(t, max(0.0, float(f))) for t, f in zip(totals, node_free, strict=True)]
    rest = excluded - sum(t - c for t, c in zip(totals, caps, strict=True))
    while rest > 1e-9 and any(c > 0 for c in caps):
        i = max(range(len(caps)), key=caps.__getitem__)
        taken = min(caps[i], rest)
        caps[i] -= taken
        rest -= taken
    return tuple(caps)


def cap_cpus(node_cpus: Sequence[float], limit: float | None) -> tuple[float, ...]:
    """The CPUs each node offers once ``limit`` (``resource_limits.cpu``; ``None``: none) caps
    their sum: nodes keep theirs in order until the limit is used up.

    >>> cap_cpus((4.0, 4.0), 6)
    (4.0, 2.0)
    """
    if limit is None:
        return tuple(node_cpus)
    left = max(0.0, float(limit))
    capped = []
    for cpus in node_cpus:
        capped.append(min(float(cpus), left))
        left -= capped[-1]
    return tuple(capped)


def task_slots(num_cpus: float, node_cpus: Sequence[float],
               held_by_actors: Sequence[float] = ()) -> TaskSlots:
    """The CPU slots left to task operators once the actor pools took theirs, node by node."""
    if num_cpus <= 0:  # asks for no CPU: bounded by memory, and by a multiple of the machine
        return TaskSlots(limit=max(1, int(2 * max(sum(node_cpus), 1))), num_cpus=0.0,
                         reserved=False)
    free = node_room(node_cpus, held_by_actors)
    limit = sum(math.floor(f / num_cpus + 1e-9) for f in free)
    if limit < 1:
        return TaskSlots(limit=1, num_cpus=0.0, reserved=True)
    return TaskSlots(limit=limit, num_cpus=num_cpus, reserved=False)


class AdmissionPolicy:
    """Decides the next operator to start a task; see the module docstring for the rule."""

    def __init__(self, budget_bytes: int, *, actor_tasks_in_flight: int = 2) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes={budget_bytes} must be > 0")
        if actor_tasks_in_flight < 1:
            raise ValueError(f"actor_tasks_in_flight={actor_tasks_in_flight} must be >= 1")
        self.budget_bytes = budget_bytes
        self.actor_tasks_in_flight = actor_tasks_in_flight

    def _per_actor(self, op: OperatorView) -> int:
        return op.tasks_per_actor or self.actor_tasks_in_flight

    # -- concurrency ----------------------------------------------------------------------------
    def _slots_free(self, index: int, snapshot: Snapshot) -> bool:
        ops = snapshot.operators
        op = ops[index]
        if op.compute == "actors":
            return op.running < op.actors_alive * self._per_actor(op)
        if op.max_running is not None and op.running >= op.max_running:
            return False
        slots = task_slots(op.num_cpus, snapshot.nodes, actor_cpus(ops))
        if op.num_cpus <= 0:
            return op.running < slots.limit
        # Task operators that ask for CPUs share the nodes' room with their running tasks.
        if slots.reserved:
            return sum(o.running for o in ops if o.compute == "tasks" and o.num_cpus > 0) == 0
        running = [o.num_cpus for o in ops if o.compute == "tasks" and o.num_cpus > 0
                   for _ in range(o.running)]
        return fits(node_room(snapshot.nodes, actor_cpus(ops)), [*running, op.num_cpus])

    # -- memory ---------------------------------------------------------------------------------
    @staticmethod
    def _estimate(op: OperatorView) -> int | None:
        if op.est_output_bytes is not None:
            return op.est_output_bytes
        if op.is_source:
            return 0 if op.running == 0 else None  # learn the size from one task first
        return op.next_input_bytes

    def _fits(self, index: int, snapshot: Snapshot) -> bool:
        ops = snapshot.operators
        op = ops[index]
        est = self._estimate(op)
        if est is None:
            return False
        limit = self.budget_bytes
        if op.is_source:
            downstream = ops[index + 1:]
            limit -= sum(self._estimate(o) or o.next_input_bytes for o in downstream)
        return snapshot.bytes_in_flight + est <= limit

    # -- decisions ------------------------------------------------------------------------------
    def next_launch(self, snapshot: Snapshot) -> int | None:
        """The index of the operator that should start a task now, or None to wait."""
        ops = snapshot.operators
        startable = [
            i for i in range(len(ops))
            if ops[i].has_input and self._slots_free(i, snapshot)
        ]
        for i in reversed(startable):
            if self._fits(i, snapshot):
                return i
        nothing_running = all(op.running == 0 for op in ops)
        if startable and nothing_running and snapshot.outputs_ready == 0:
            return startable[-1]
        return None

    def actor_target(self, index: int, snapshot: Snapshot) -> int:
        """How many actors the pool at ``index`` should have now (it grows one at a time)."""
        ops = snapshot.operators
        op = ops[index]
        if op.compute != "actors":
            raise ValueError(f"operator {index} runs tasks, not an actor pool")
        if op.input_done and not op.has_input:
            # Drained: keep only the actors still working (idle ones are released).
            return min(op.actors_alive, math.ceil(op.running / self._per_actor(op)))
        if op.actors_alive < op.min_actors:
            return op.min_actors
        saturated = op.running >= op.actors_alive * self._per_actor(op)
        cpu_left = fits(node_room(snapshot.nodes, actor_cpus(ops)), [op.num_cpus])
        if op.has_input and saturated and op.actors_alive < op.max_actors and cpu_left:
            return op.actors_alive + 1
        return op.actors_alive
