"""The logical plan of a ``Dataset`` (a small immutable tree) and its compilation into a chain
of physical stages, fusing consecutive task stages into one task per block."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ember
from ember.data._block import Block
from ember.data._transforms import Transform


@dataclass(frozen=True)
class ActorPoolStrategy:
    """Run a class UDF on a pool of actors: ``ActorPoolStrategy(size=n)`` or
    ``ActorPoolStrategy(min_size=1, max_size=4)`` (grows while every actor is busy);
    ``max_tasks_in_flight_per_actor=k``: at most k blocks sent to one actor at a time."""

    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    initial_size: int | None = None  # actors started at first (default min_size)
    # calls sent to one actor at a time (default: DataContext.actor_tasks_in_flight)
    max_tasks_in_flight_per_actor: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None:
            if self.min_size is not None or self.max_size is not None:
                raise ValueError("ActorPoolStrategy takes size=, or min_size=/max_size=, not both")
            if not isinstance(self.size, int) or self.size < 1:
                raise ValueError(f"ActorPoolStrategy(size={self.size!r}) must be an int >= 1")
        lo, hi = self.bounds
        if lo < 1 or hi < lo:
            raise ValueError(
                f"ActorPoolStrategy(min_size={lo}, max_size={hi}) needs 1 <= min_size <= max_size"
            )
        if self.initial_size is not None and not (
                isinstance(self.initial_size, int) and lo <= self.initial_size <= hi):
            raise ValueError(f"ActorPoolStrategy(initial_size={self.initial_size!r}) must be "
                             f"an int between min_size ({lo}) and max_size ({hi})")
        n = self.max_tasks_in_flight_per_actor
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"ActorPoolStrategy(max_tasks_in_flight_per_actor={n!r}) must be "
                             "an int >= 1")

    @property
    def start_size(self) -> int:
        """The number of actors the pool starts with (``initial_size``, else ``min_size``)."""
        return self.bounds[0] if self.initial_size is None else self.initial_size

    @property
    def bounds(self) -> tuple[int, int]:
        """``(min_size, max_size)``: ``(size, size)`` for a fixed pool; ``max_size`` defaults to
        ``max(min_size, 4)``.

        >>> ember.data.ActorPoolStrategy(min_size=2, max_size=8).bounds
        (2, 8)
        """
        if self.size is not None:
            return self.size, self.size
        lo = 1 if self.min_size is None else self.min_size
        hi = self.max_size if self.max_size is not None else max(lo, 4)
        return lo, hi


@dataclass(frozen=True)
class TaskPoolStrategy:
    """Run the UDF as core tasks (the default for functions); ``size=n`` runs at most ``n`` of
    them at once (what ``concurrency=n`` asks for a function)."""

    size: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(
                self.size, int) or self.size < 1):
            raise ValueError(f"TaskPoolStrategy(size={self.size!r}) must be an int >= 1")


def strategy(compute: Any) -> ActorPoolStrategy | TaskPoolStrategy | None:
    """``compute=`` as a strategy: Ray 2.5's strings ``"tasks"`` (the default) and
    ``"actors"`` (an autoscaling actor pool) as well as the strategy objects."""
    if compute is None or isinstance(compute, (ActorPoolStrategy, TaskPoolStrategy)):
        return compute
    if isinstance(compute, str) and compute == "tasks":
        return None
    if isinstance(compute, str) and compute == "actors":
        return ActorPoolStrategy()
    raise ValueError(
        f"compute={compute!r} is not a strategy: use \"tasks\" (the default), \"actors\" (an "
        "autoscaling actor pool), ActorPoolStrategy(size=n) or ActorPoolStrategy(min_size=, "
        "max_size=), or TaskPoolStrategy(size=n)")


@dataclass(frozen=True)
class BlockMeta:
    num_rows: int
    size_bytes: int


@dataclass(frozen=True, eq=False)
class InProcessBlock:
    """A block read in the consuming process itself (see ``Read.in_process``): it stands where
    an ObjectRef would, and ``fetch`` takes the block without a copy."""

    block: Block


def fetch(ref: Any) -> Block:
    """The block behind a bundle's ``ref``: from the object store, or the one already here."""
    if isinstance(ref, InProcessBlock):
        return ref.block
    block: Block = ember.get(ref)
    return block


@dataclass(frozen=True)
class Bundle:
    """A block in the object store, what the executor knows of it, and its place in the plan."""

    ref: Any  # ObjectRef of a Block, or an InProcessBlock
    meta: BlockMeta
    seq: tuple[int, ...] = (0,)


@dataclass
class ReadTask:
    """Produces blocks when called inside a task; sizes are estimates for planning (or None)."""

    read: Callable[[], Iterable[Block]]
    num_rows: int | None = None
    size_bytes: int | None = None
    # The same rows in pieces of a few MiB, for a read in the consuming process (``in_process``);
    # None: ``read`` serves there too.
    pieces: Callable[[], Iterable[Block]] | None = None
    input_files: tuple[str, ...] = ()  # the files it reads (``Dataset.input_files``)

    def __call__(self) -> Iterable[Block]:
        return self.read()


# -- logical nodes ------------------------------------------------------------------------------
class Node:
    name: str

    def inputs(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True, eq=False)
class Read(Node):
    name: str
    tasks: tuple[ReadTask, ...]
    num_cpus: float | None = None  # per read task (default 1)
    max_tasks: int | None = None  # at most this many read tasks at once
    # Its tasks may run in the process that iterates the dataset: local files read by native
    # code off the GIL (pyarrow), whose blocks would otherwise be copied through the store.
    in_process: bool = False
    remote_args: dict[str, Any] | None = None  # Ray's ray_remote_args: checked by remote_args()


@dataclass(frozen=True, eq=False)
class InputBlocks(Node):
    """Blocks already in the object store (``from_*`` functions, ``materialize``)."""

    name: str
    bundles: tuple[Bundle, ...]
    input_files: tuple[str, ...] = ()  # of the plan that made them (``materialize``)


@dataclass(frozen=True, eq=False)
class MapStage(Node):
    input: Node
    name: str
    transforms: tuple[Transform, ...]
    actor_pool: ActorPoolStrategy | None = None
    num_cpus: float | None = None
    num_gpus: float = 0.0
    resources: dict[str, float] | None = None
    max_tasks: int | None = None  # at most this many tasks at once (concurrency=n)
    min_rows: int = 0  # each task gets at least this many rows (joined blocks), when there are
    remote_args: dict[str, Any] | None = None

    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Limit(Node):
    input: Node
    n: int
    name: str = "Limit"

    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Union(Node):
    children: tuple[Node, ...]
    name: str = "Union"

    def inputs(self) -> tuple[Node, ...]:
        return self.children


@dataclass(frozen=True, eq=False)
class AllToAll(Node):
    """A barrier: every input is materialized, then ``fn(list of each input's bundles)``
    returns the output bundles (sort, shuffle, repartition, groupby, zip)."""

    children: tuple[Node, ...]
    name: str
    fn: Callable[[list[list[Bundle]]], list[Bundle]]

    def inputs(self) -> tuple[Node, ...]:
        return self.children


def input_files(node: Node) -> list[str]:
    """The files the reads of the plan ``node`` read, each once, in plan order."""
    files: dict[str, None] = {}
    if isinstance(node, Read):
        for task in node.tasks:
            files.update(dict.fromkeys(task.input_files))
    elif isinstance(node, InputBlocks):
        files.update(dict.fromkeys(node.input_files))
    for child in node.inputs():
        files.update(dict.fromkeys(input_files(child)))
    return list(files)


def describe(node: Node) -> str:
    parts = []
    current: Node | None = node
    while current is not None:
        parts.append(current.name)
        ins = current.inputs()
        current = ins[0] if len(ins) == 1 else None
    return " -> ".join(reversed(parts))


# -- physical stages ----------------------------------------------------------------------------
@dataclass
class StageSpec:
    """One physical operator of the streaming chain."""

    name: str
    kind: str  # "source" | "tasks" | "actors" | "limit"
    transforms: list[Transform] = field(default_factory=list)
    # source work: ReadTasks and/or Bundles, possibly produced lazily by child executions
    work: Callable[[], Iterator[ReadTask | Bundle]] | None = None
    work_total: int | None = None
    rows_total: int | None = None
    actor_pool: ActorPoolStrategy | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] | None = None
    limit: int = 0
    max_tasks: int | None = None
    min_rows: int = 0
    in_process: bool = False  # a Read whose tasks may run in the consuming process
    remote_args: dict[str, Any] | None = None  # more options of its tasks or actors

    def fusable(self, stage: MapStage) -> bool:
        if self.kind not in ("source", "tasks") or stage.actor_pool is not None:
            return False
        if stage.min_rows:  # its tasks join blocks: it needs blocks of its own to join
            return False
        return (self.num_cpus, self.num_gpus, self.resources, self.max_tasks,
                self.remote_args or {}) == (_cpus(stage), stage.num_gpus, stage.resources,
                                            stage.max_tasks, stage.remote_args or {})


def _cpus(stage: MapStage) -> float:
    if stage.num_cpus is not None:
        return stage.num_cpus
    return 1.0


def compile_plan(
    node: Node, run_child: Callable[[Node], Iterator[Bundle]]
) -> list[StageSpec]:
    """The chain of physical stages for ``node``. ``run_child`` executes a sub-plan (the inputs of
    a union or a barrier) and yields its bundles."""
    if isinstance(node, Read):
        tasks = node.tasks
        rows = [t.num_rows for t in tasks]
        return [StageSpec(
            name=node.name, kind="source", work=lambda: iter(tasks), work_total=len(tasks),
            rows_total=sum(r for r in rows if r is not None) if None not in rows else None,
            num_cpus=1.0 if node.num_cpus is None else node.num_cpus, max_tasks=node.max_tasks,
            in_process=node.in_process and not node.remote_args, remote_args=node.remote_args,
        )]
    if isinstance(node, InputBlocks):
        bundles = node.bundles
        return [StageSpec(
            name=node.name, kind="source", work=lambda: iter(bundles), work_total=len(bundles),
            rows_total=sum(b.meta.num_rows for b in bundles), num_cpus=1.0,
        )]
    if isinstance(node, MapStage):
        chain = compile_plan(node.input, run_child)
        last = chain[-1]
        if last.fusable(node) and not (last.kind == "source" and last.actor_pool is not None):
            last.transforms.extend(node.transforms)
            last.name = f"{last.name}->{node.name}"
            return chain
        chain.append(StageSpec(
            name=node.name, kind="actors" if node.actor_pool is not None else "tasks",
            transforms=list(node.transforms), actor_pool=node.actor_pool,
            num_cpus=_cpus(node), num_gpus=node.num_gpus, resources=node.resources,
            rows_total=last.rows_total if _row_preserving(node) else None,
            max_tasks=node.max_tasks, min_rows=node.min_rows, remote_args=node.remote_args,
        ))
        return chain
    if isinstance(node, Limit):
        chain = compile_plan(node.input, run_child)
        total = chain[-1].rows_total
        chain.append(StageSpec(name=node.name, kind="limit", limit=node.n,
                               rows_total=node.n if total is None else min(total, node.n)))
        return chain
    if isinstance(node, Union):
        children = node.children

        def union_work() -> Iterator[ReadTask | Bundle]:
            for index, child in enumerate(children):
                for bundle in run_child(child):
                    yield Bundle(bundle.ref, bundle.meta, (index, *bundle.seq))

        return [StageSpec(name=node.name, kind="source", work=union_work)]
    if isinstance(node, AllToAll):
        fn, kids = node.fn, node.children

        def barrier_work() -> Iterator[ReadTask | Bundle]:
            materialized = [list(run_child(child)) for child in kids]
            yield from fn(materialized)

        return [StageSpec(name=node.name, kind="source", work=barrier_work)]
    raise TypeError(f"unknown plan node {node!r}")


def _row_preserving(stage: MapStage) -> bool:
    from ember.data._transforms import MapRows

    return all(isinstance(t, MapRows) and t.mode == "map" for t in stage.transforms)
