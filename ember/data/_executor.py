"""The streaming executor: runs a compiled chain of stages as core tasks and actor pools,
joined by bounded queues, within the memory budget of the current ``DataContext``.

It is a generator driven by its consumer: between two blocks taken by the consumer it starts
what the admission policy (``_admission.py``) allows and collects what finished; while the
consumer is busy, nothing new starts (a slow loop pauses the pipeline upstream).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import ember
from ember.data import _admission
from ember.data._context import DataContext
from ember.data._inprocess import InProcessReads
from ember.data._observe import DatasetView
from ember.data._plan import (
    BlockMeta,
    Bundle,
    InProcessBlock,
    Node,
    ReadTask,
    StageSpec,
    compile_plan,
)
from ember.data._progress import ProgressBars
from ember.data._stats import DatasetStats, OperatorStats
from ember.data._transforms import MapBatches, MapWorker, make_task_function
from ember.errors import ActorDiedError, ResourceError

logger = logging.getLogger("ember.data")

# How long the loop waits for a task to finish before it looks around again (a stop request).
COLLECT_WAIT_S = 0.2
# Without a finished task for this long, the executor says what its tasks wait for.
STALL_GRACE_S = 60.0
STALL_REPEAT_S = 300.0

# A block's place in plan order: the first and last input positions it covers. A block made
# by joining blocks (so that map_batches sees full batches) covers several.
Span = tuple[int, int]


@dataclass
class _Running:
    block_ref: Any
    pos: Span
    in_bytes: int
    est_bytes: int
    actor: Any = None
    inputs: list[Bundle] | None = None  # an actor call's input, sent again if the actor dies
    attempt: int = 0


class _Stage:
    """Runtime state of one stage."""

    def __init__(self, spec: StageSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.inqueue: deque[tuple[Span, Bundle]] = deque()
        # Inputs of calls whose pool actor died, with the attempt they are at: sent first.
        self.retries: deque[tuple[Span, list[Bundle], int]] = deque()
        self.running: dict[Any, _Running] = {}
        self.stats = OperatorStats(spec.name)
        self.work: Iterator[ReadTask | Bundle] | None = None
        self.peeked: list[ReadTask | Bundle] = []
        self.work_done = spec.kind != "source"
        self.input_done = spec.kind == "source"  # set for others when upstream finishes
        self.next_pos = 0
        self.remote_fn: Any = None
        self.actors: dict[Any, int] = {}  # handle -> calls in flight
        self.out_sizes: list[int] = []
        self.limit_left = spec.limit
        self.reorder: dict[int, tuple[Span, Bundle]] = {}  # by first position
        self.expect = 0
        self.stopped = False
        self.upstream: _Stage | None = None
        self.max_running = spec.max_tasks  # tasks at once (concurrency=n, resource_limits.gpu)
        # Rows a task of this stage should get at least: small blocks are joined so that
        # map_batches sees batches of its batch_size (the last batch may be smaller).
        first = spec.transforms[0] if spec.transforms else None
        self.bundle_rows = (first.batch_size or 0) if (
            spec.kind in ("tasks", "actors") and isinstance(first, MapBatches)) else 0
        if spec.kind in ("tasks", "actors") and spec.min_rows:  # e.g. min_rows_per_file
            self.bundle_rows = max(self.bundle_rows, spec.min_rows)

    def est_output(self) -> int | None:
        if self.out_sizes:
            return sum(self.out_sizes) // len(self.out_sizes)
        if self.peeked and isinstance(self.peeked[0], ReadTask):
            return self.peeked[0].size_bytes
        return None

    def has_input(self) -> bool:
        if self.stopped:
            return False
        if self.spec.kind != "source":
            if self.retries:
                return True
            if not self.inqueue:
                return False
            if not self.bundle_rows or self.input_done:
                return True
            # Wait for more rows while some stage upstream runs or can start work. This cannot
            # stall: when nothing runs at all, the admission policy starts upstream regardless.
            queued = sum(b.meta.num_rows for _, b in self.inqueue)
            return queued >= self.bundle_rows or not self._upstream_busy()
        if not self.peeked and not self.work_done:
            if self.work is None:
                assert self.spec.work is not None
                self.work = self.spec.work()
            try:
                self.peeked.append(next(self.work))
            except StopIteration:
                self.work_done = True
        return bool(self.peeked)

    def _upstream_busy(self) -> bool:
        stage = self.upstream
        while stage is not None:
            if stage.running or stage.has_input():
                return True
            stage = stage.upstream
        return False

    def next_input_bytes(self) -> int:
        if self.spec.kind == "source":
            item = self.peeked[0] if self.peeked else None
            if isinstance(item, Bundle):
                return item.meta.size_bytes
            return 0
        if self.retries:
            return sum(b.meta.size_bytes for b in self.retries[0][1])
        return self.inqueue[0][1].meta.size_bytes if self.inqueue else 0

    def queued_bytes(self) -> int:
        return sum(b.meta.size_bytes for _, b in self.inqueue) + sum(
            b.meta.size_bytes for _, bundles, _ in self.retries for b in bundles)

    def finished(self) -> bool:
        if self.spec.kind == "source":
            return (self.stopped or self.work_done) and not self.peeked and not self.running
        return self.input_done and not self.inqueue and not self.retries and not self.running


def _gpu_capped(spec: StageSpec, gpu_limit: float | None) -> int | None:
    """How many tasks of a task operator may run at once under ``resource_limits.gpu``."""
    if gpu_limit is None or spec.kind == "actors" or not spec.num_gpus:
        return spec.max_tasks
    most = int(gpu_limit / spec.num_gpus + 1e-9)
    if most < 1:
        raise ResourceError(
            f"{spec.name}: each task needs GPU={spec.num_gpus:g}, but DataContext.execution_"
            f"options.resource_limits.gpu={gpu_limit:g}; raise the limit or ask for fewer GPUs"
        )
    return most if spec.max_tasks is None else min(spec.max_tasks, most)


def reads_in_process(specs: list[StageSpec], ctx: DataContext) -> bool:
    """Whether a consumer in this process should run the plan's reads itself (``_inprocess``):
    a plan that only reads local files with native code (``Read.in_process``), in no particular
    order, and a context that allows it."""
    return (ctx.read_local_files_in_process and not ctx.preserve_order and len(specs) == 1
            and specs[0].kind == "source" and specs[0].in_process and not specs[0].transforms)


class StreamingExecutor:
    def __init__(self, node: Node, context: DataContext | None = None,
                 node_cpus: tuple[float, ...] | None = None, in_process: bool = False) -> None:
        # A copy, read from while this execution runs: a change to the current context (or to
        # the one passed) applies to the next execution, never to this one halfway through.
        self.ctx = (context or DataContext.get_current()).copy()
        self.preserve_order = self.ctx.preserve_order
        options = self.ctx.execution_options
        cpu_limit, gpu_limit = options.cpu_limit(), options.gpu_limit()
        specs = compile_plan(node, self._run_child)
        # in_process: the consumer is in this process, and the plan's reads may run here.
        self.reads: InProcessReads | None = None
        if in_process and reads_in_process(specs, self.ctx):
            node_cpus = _admission.cap_cpus((float(os.cpu_count() or 1),), cpu_limit)
            self.reads = InProcessReads(max(1, int(node_cpus[0])))
        self.stages = [_Stage(spec, i) for i, spec in enumerate(specs)]
        for upstream, stage in zip(self.stages, self.stages[1:], strict=False):
            stage.upstream = upstream
        self.budget = self.ctx.resolved_budget()
        self.policy = _admission.AdmissionPolicy(
            self.budget, actor_tasks_in_flight=self.ctx.actor_tasks_in_flight
        )
        self.stats = DatasetStats(operators=[s.stats for s in self.stages],
                                  memory_budget_bytes=self.budget)
        self.output: deque[tuple[Span, Bundle]] = deque()
        self.reorder: dict[int, tuple[Span, Bundle]] = {}
        self.next_out = 0
        if node_cpus is None:
            # A request is placed on one node: plan with what each node offers, never with the
            # cluster's total. CPUs held by other work for the whole execution (a trainer's
            # workers) are not ours: planning with them would leave tasks waiting forever.
            nodes = ember.nodes()
            node_cpus = _admission.node_capacities(
                [n["Resources"].get("CPU", 0.0) for n in nodes],
                [n["AvailableResources"].get("CPU", 0.0) for n in nodes],
                self.ctx.excluded_cpus) or (1.0,)
        # resource_limits.cpu: plan with no more CPUs than that, whatever the nodes have.
        self.node_cpus = _admission.cap_cpus(tuple(node_cpus), cpu_limit)
        self.total_cpus = sum(self.node_cpus)
        per_node = ", ".join(f"{c:g}" for c in self.node_cpus)
        limited = (f"; at most {cpu_limit:g} by execution_options.resource_limits.cpu"
                   if cpu_limit is not None else "")
        self.excluded_note = (f" (CPUs per node: {per_node}; {self.ctx.excluded_cpus:g} held "
                              f"for other work{limited})" if self.ctx.excluded_cpus
                              else f" (CPUs per node: {per_node}{limited})")
        for stage in self.stages:
            stage.max_running = _gpu_capped(stage.spec, gpu_limit)
        self._last_progress = time.monotonic()
        self._warned_at: float | None = None
        self.progress = ProgressBars(
            [s.spec.name for s in self.stages], [s.spec.rows_total for s in self.stages],
            enabled=self.ctx.enable_progress_bars, only_last=not options.verbose_progress,
        )
        # Set from another thread when the consumer left (a prefetching iterator closed): the
        # loop ends within a wait and its cleanup cancels the tasks still running.
        self.stop_requested = threading.Event()
        self.view: DatasetView | None = DatasetView(self.stages)  # observe: the dashboard's view

    def _run_child(self, node: Node) -> Iterator[Bundle]:
        # Children of a barrier or union run in plan order: zip and split line rows up by it.
        child = StreamingExecutor(node, dataclasses.replace(self.ctx, preserve_order=True),
                                  self.node_cpus)
        child.progress.enabled = False
        child.view = None  # shown as part of this dataset
        return child.run()

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> Generator[Bundle, None, None]:
        start = time.perf_counter()
        status = "failed"
        try:
            self._start_pools()
            while not self.stop_requested.is_set():
                self._propagate_done()
                self._scale_pools()
                while (index := self._next_launch()) is not None:
                    self._launch(self.stages[self._schedulable()[index]])
                self._track_memory()
                if self.view is not None:
                    self.view.maybe_publish(self)
                if self.output:
                    pos, bundle = self.output.popleft()
                    # its place in the plan's order, for consumers that gather every block
                    # and give them back in order (take_all, to_pandas, materialize)
                    yield bundle if bundle.seq == (pos[0],) else dataclasses.replace(
                        bundle, seq=(pos[0],))
                    continue
                if all(s.finished() for s in self.stages):
                    status = "done"
                    return
                self._collect()
        except GeneratorExit:  # the consumer stopped early (take, limit): not a failure
            status = "done"
            raise
        finally:
            self.stats.wall_s = time.perf_counter() - start
            self.stats.executed = True
            self._shutdown()
            if self.view is not None:
                self.view.maybe_publish(self, status, force=True)

    def _schedulable(self) -> list[int]:
        return [s.index for s in self.stages if s.spec.kind != "limit"]

    def _view(self, stage: _Stage) -> _admission.OperatorView:
        spec = stage.spec
        lo, hi = spec.actor_pool.bounds if spec.actor_pool is not None else (0, 0)
        return _admission.OperatorView(
            compute="actors" if spec.kind == "actors" else "tasks",
            is_source=spec.kind == "source", has_input=stage.has_input(),
            running=len(stage.running), num_cpus=spec.num_cpus,
            est_output_bytes=stage.est_output(), next_input_bytes=stage.next_input_bytes(),
            input_done=stage.input_done, actors_alive=len(stage.actors),
            min_actors=lo, max_actors=hi, max_running=stage.max_running,
            tasks_per_actor=(spec.actor_pool.max_tasks_in_flight_per_actor
                             if spec.actor_pool is not None else None),
        )

    def _snapshot(self) -> _admission.Snapshot:
        views = tuple(self._view(self.stages[i]) for i in self._schedulable())
        return _admission.Snapshot(views, self._bytes_in_flight(), self.total_cpus,
                                   outputs_ready=len(self.output), node_cpus=self.node_cpus)

    def _next_launch(self) -> int | None:
        snapshot = self._snapshot()
        index = self.policy.next_launch(snapshot)
        if index is not None and snapshot.bytes_in_flight + (
            snapshot.operators[index].est_output_bytes or 0
        ) > self.budget:
            self.stats.over_budget_launches += 1
        return index

    def _bytes_in_flight(self) -> int:
        total = sum(b.meta.size_bytes for _, b in self.output)
        total += sum(b.meta.size_bytes for _, b in self.reorder.values())
        for stage in self.stages:
            total += sum(b.meta.size_bytes for _, b in stage.reorder.values())
            total += stage.queued_bytes()
            total += sum(r.in_bytes + r.est_bytes for r in stage.running.values())
        return total

    def _track_memory(self) -> None:
        self.stats.peak_bytes_in_flight = max(self.stats.peak_bytes_in_flight,
                                              self._bytes_in_flight())
        for stage in self.stages:
            held = stage.queued_bytes() + sum(
                r.in_bytes + r.est_bytes for r in stage.running.values())
            stage.stats.peak_bytes_in_flight = max(stage.stats.peak_bytes_in_flight, held)

    # -- starting work --------------------------------------------------------------------------
    def _launch(self, stage: _Stage) -> None:
        spec = stage.spec
        if spec.kind == "source":
            item = stage.peeked.pop(0)
            pos = (stage.next_pos, stage.next_pos)
            stage.next_pos += 1
            if isinstance(item, Bundle) and not spec.transforms:
                stage.stats.rows += item.meta.num_rows
                self._emit(stage, pos, item)
                return
            arg, in_bytes = (item.ref, item.meta.size_bytes) if isinstance(item, Bundle) else (
                item, 0)
            est = stage.est_output() or (in_bytes if isinstance(item, Bundle) else 0)
            self._submit_task(stage, [arg], pos, in_bytes, est)
            return
        attempt = 0
        if stage.retries:
            pos, bundles, attempt = stage.retries.popleft()
        else:
            pos, bundles = self._take_bundles(stage)
        in_bytes = sum(b.meta.size_bytes for b in bundles)
        est = stage.est_output() or in_bytes
        refs = [b.ref for b in bundles]
        if spec.kind == "tasks":
            self._submit_task(stage, refs, pos, in_bytes, est)
        else:
            # The least busy actor; among equals the one used longest ago (the chosen actor
            # moves to the end), so blocks that arrive one at a time still reach every actor.
            actor = min(stage.actors, key=lambda a: stage.actors[a])
            stage.actors[actor] = stage.actors.pop(actor) + 1
            block_ref, meta_ref = actor.process.options(num_returns=2).remote(*refs)
            stage.running[meta_ref] = _Running(block_ref, pos, in_bytes, est, actor, bundles,
                                               attempt)

    def _take_bundles(self, stage: _Stage) -> tuple[Span, list[Bundle]]:
        """The next input for one task: one block, or several joined up to ``bundle_rows``."""
        if self.preserve_order and stage.bundle_rows:
            # Start from the earliest block so the blocks after it in plan order can join it.
            first = min(range(len(stage.inqueue)), key=lambda i: stage.inqueue[i][0][0])
            stage.inqueue.rotate(-first)
        pos, bundle = stage.inqueue.popleft()
        bundles = [bundle]
        rows = bundle.meta.num_rows
        while stage.bundle_rows and rows < stage.bundle_rows and stage.inqueue:
            if self.preserve_order:
                # Join only the block that comes next in plan order, so spans stay contiguous.
                at = next((i for i, (p, _) in enumerate(stage.inqueue) if p[0] == pos[1] + 1),
                          None)
                if at is None:
                    break
                (_, last), more = stage.inqueue[at]
                del stage.inqueue[at]
                pos = (pos[0], last)
            else:
                _, more = stage.inqueue.popleft()
            bundles.append(more)
            rows += more.meta.num_rows
        return pos, bundles

    def _submit_task(self, stage: _Stage, args: list[Any], pos: Span, in_bytes: int,
                     est: int) -> None:
        spec = stage.spec
        if self.reads is not None:  # a read task, run here: its key stands for a task's ref
            key = object()
            stage.running[key] = _Running(None, pos, in_bytes, est)
            self.reads.submit(key, args[0])
            return
        if stage.remote_fn is None:
            fn = ember.remote(make_task_function(spec.transforms))
            stage.remote_fn = fn
        held = [s.spec.num_cpus for s in self.stages for _ in s.actors]
        slots = _admission.task_slots(spec.num_cpus, self.node_cpus, held)
        options: dict[str, Any] = {**(spec.remote_args or {}), "num_returns": 2,
                                   "num_cpus": slots.num_cpus}
        if spec.num_gpus:
            options["num_gpus"] = spec.num_gpus
        if spec.resources:
            options["resources"] = spec.resources
        # ResourceError (a request that can never fit) raises here, at once, to the consumer.
        block_ref, meta_ref = stage.remote_fn.options(**options).remote(*args)
        stage.running[meta_ref] = _Running(block_ref, pos, in_bytes, est)

    # -- actor pools ----------------------------------------------------------------------------
    def _start_pools(self) -> None:
        for stage in self.stages:
            spec = stage.spec
            if spec.kind != "actors" or spec.actor_pool is None:
                continue
            lo = spec.actor_pool.start_size
            held = [s.spec.num_cpus for s in self.stages for _ in s.actors]
            if not _admission.fits(_admission.node_room(self.node_cpus, held),
                                   [spec.num_cpus] * lo):
                raise ResourceError(
                    f"{spec.name}: ActorPoolStrategy needs at least {lo} actors of CPU="
                    f"{spec.num_cpus} each, each on one node, but this execution has "
                    f"CPU={self.total_cpus:g}{self.excluded_note}; lower min_size or num_cpus, "
                    "or give ember more CPUs"
                )
            for _ in range(lo):
                self._add_actor(stage)

    def _add_actor(self, stage: _Stage) -> None:
        spec = stage.spec
        options: dict[str, Any] = {**(spec.remote_args or {}), "num_cpus": spec.num_cpus}
        if spec.num_gpus:
            options["num_gpus"] = spec.num_gpus
        if spec.resources:
            options["resources"] = spec.resources
        worker = ember.remote(MapWorker).options(**options)
        stage.actors[worker.remote(spec.transforms)] = 0
        stage.stats.actors_peak = max(stage.stats.actors_peak, len(stage.actors))
        self.progress.update(stage.index, 0, actors=len(stage.actors))

    def _scale_pools(self) -> None:
        schedulable = self._schedulable()
        for position, index in enumerate(schedulable):
            stage = self.stages[index]
            if stage.spec.kind != "actors":
                continue
            target = self.policy.actor_target(position, self._snapshot())
            while len(stage.actors) < target:
                self._add_actor(stage)
            if len(stage.actors) > target:
                for actor in [a for a, n in stage.actors.items() if n == 0]:
                    if len(stage.actors) <= target:
                        break
                    del stage.actors[actor]
                    ember.kill(actor)
                self.progress.update(stage.index, 0, actors=len(stage.actors))

    # -- finishing work -------------------------------------------------------------------------
    def _collect(self) -> None:
        pending = [ref for s in self.stages for ref in s.running]
        if not pending:
            return
        if self.reads is not None:
            arrived = self.reads.arrivals(COLLECT_WAIT_S)
            if arrived:
                self._last_progress = time.monotonic()
            else:
                self._say_if_stalled()
            for key, item, size in arrived:
                self._arrive(self.stages[0], key, item, size)
            return
        ready, _ = ember.wait(pending, num_returns=1, timeout=COLLECT_WAIT_S)
        if ready:
            more, _ = ember.wait(pending, num_returns=len(pending), timeout=0)
            ready = list({*ready, *more})
            self._last_progress = time.monotonic()
        else:
            self._say_if_stalled()
        for meta_ref in ready:
            for stage in self.stages:
                running = stage.running.get(meta_ref)
                if running is not None:
                    self._complete(stage, meta_ref, running)
                    break

    def _say_if_stalled(self) -> None:
        """After STALL_GRACE_S without a finished task, say what the running ones asked for and
        what each node has free: the answer when they wait for room that never comes."""
        now = time.monotonic()
        since = self._warned_at if self._warned_at is not None else self._last_progress
        if now - since < (STALL_GRACE_S if self._warned_at is None else STALL_REPEAT_S):
            return
        self._warned_at = now
        asks = sorted({f"{s.spec.name}: CPU {s.spec.num_cpus:g}" + (
            f", GPU {s.spec.num_gpus:g}" if s.spec.num_gpus else "") + "".join(
            f", {k} {v:g}" for k, v in sorted((s.spec.resources or {}).items()))
            for s in self.stages if s.running})
        names = {"CPU", "GPU"} | {k for s in self.stages for k in (s.spec.resources or {})}
        free = "; ".join(
            f"node {str(n['NodeID'])[:8]} ({n['NodeManagerAddress']}): " + ", ".join(
                f"{k} {n['AvailableResources'].get(k, 0.0):g} free of {n['Resources'][k]:g}"
                for k in sorted(names) if k in n["Resources"])
            for n in ember.nodes())
        logger.warning(
            "ember.data: no task has finished for %.0f s. Running or waiting for room: %s "
            "(per task or actor). Free now: %s. If they wait for room, free those resources or "
            "ask for less", now - self._last_progress, "; ".join(asks), free)

    def _complete(self, stage: _Stage, meta_ref: Any, running: _Running) -> None:
        try:
            meta = ember.get(meta_ref)  # raises the UDF's exception, to the consumer
        except ActorDiedError as exc:
            if running.actor is None:
                raise
            self._actor_died(stage, meta_ref, running, exc)
            return
        del stage.running[meta_ref]
        if running.actor is not None and running.actor in stage.actors:
            stage.actors[running.actor] -= 1
        stage.stats.record_task(meta)
        stage.out_sizes.append(int(meta["bytes"]))
        bundle = Bundle(running.block_ref, BlockMeta(int(meta["rows"]), int(meta["bytes"])))
        self._emit(stage, running.pos, bundle)

    def _actor_died(self, stage: _Stage, meta_ref: Any, running: _Running,
                    exc: ActorDiedError) -> None:
        """A pool actor died under a call (killed, out of memory, a crash in native code):
        the pool replaces it (``_scale_pools``) and the call's input goes to another actor,
        up to ``actor_block_retries`` times."""
        del stage.running[meta_ref]
        if stage.actors.pop(running.actor, None) is not None:  # its first failed call
            stage.stats.actors_died += 1
            logger.warning("ember.data: an actor of %s died (%s); a new one takes its place "
                           "and its blocks go to the pool again", stage.spec.name,
                           str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            with contextlib.suppress(Exception):  # dead already: nothing to release
                ember.kill(running.actor)
            self.progress.update(stage.index, 0, actors=len(stage.actors))
        retries = self.ctx.actor_block_retries
        if running.attempt >= retries:
            raise ActorDiedError(
                f"{stage.spec.name}: the actor running a block died, and so did "
                f"{running.attempt} other{'s' if running.attempt != 1 else ''} given the same "
                f"block after it (DataContext.actor_block_retries={retries}); the UDF may "
                f"take its process down on this input (out of memory, a native crash). Last "
                f"death: {exc}") from exc
        assert running.inputs is not None
        stage.retries.append((running.pos, running.inputs, running.attempt + 1))

    def _arrive(self, stage: _Stage, key: Any, item: Any, size: int) -> None:
        """A piece, the end, or the failure of a read task run in this process."""
        running = stage.running.get(key)
        if running is None:  # stopped meanwhile
            return
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, dict):  # done: its meta
            del stage.running[key]
            stage.stats.record_task(item)
            stage.out_sizes.append(int(item["bytes"]))
            self._propagate_done()
            return
        self._emit(stage, running.pos, Bundle(InProcessBlock(item), BlockMeta(item.num_rows, size)))

    def _emit(self, stage: _Stage, pos: Span, bundle: Bundle) -> None:
        self.progress.update(stage.index, bundle.meta.num_rows)
        nxt = stage.index + 1
        if nxt == len(self.stages):
            self._to_output(pos, bundle)
            return
        downstream = self.stages[nxt]
        if downstream.spec.kind == "limit":
            if not self.preserve_order:
                self._limit(downstream, pos, bundle)
            else:  # a limit keeps the first rows in plan order
                downstream.reorder[pos[0]] = (pos, bundle)
                while downstream.expect in downstream.reorder:
                    span, ready = downstream.reorder.pop(downstream.expect)
                    self._limit(downstream, span, ready)
                    downstream.expect = span[1] + 1
        else:
            downstream.inqueue.append((pos, bundle))
        self._propagate_done()

    def _to_output(self, pos: Span, bundle: Bundle) -> None:
        if not self.preserve_order:
            self.output.append((pos, bundle))
            return
        self.reorder[pos[0]] = (pos, bundle)
        while self.next_out in self.reorder:
            span, ready = self.reorder.pop(self.next_out)
            self.output.append((span, ready))
            self.next_out = span[1] + 1

    def _limit(self, stage: _Stage, pos: Span, bundle: Bundle) -> None:
        # Limits run on the driver: they only pass references on, slicing the last block.
        if stage.limit_left <= 0:
            return
        rows = bundle.meta.num_rows
        if rows > stage.limit_left:
            block = ember.get(bundle.ref).slice(0, stage.limit_left)
            bundle = Bundle(ember.put(block), BlockMeta(block.num_rows, int(block.nbytes)))
        stage.limit_left -= bundle.meta.num_rows
        stage.stats.rows += bundle.meta.num_rows
        stage.stats.tasks += 1
        self._emit_after_limit(stage, pos, bundle)
        if stage.limit_left <= 0:
            stage.input_done = True
            for upstream in self.stages[: stage.index]:
                self._stop(upstream)

    def _emit_after_limit(self, stage: _Stage, pos: Span, bundle: Bundle) -> None:
        # Positions after a limit restart at 0 so ordered output stays contiguous.
        self._emit(stage, (stage.next_pos, stage.next_pos), bundle)
        stage.next_pos += 1

    def _stop(self, stage: _Stage) -> None:
        stage.stopped = True
        stage.peeked.clear()
        stage.inqueue.clear()
        for meta_ref in list(stage.running):
            try:
                ember.cancel(meta_ref)
            except Exception:  # best effort: the task may have finished already
                pass
        stage.running.clear()
        stage.input_done = True

    def _propagate_done(self) -> None:
        for upstream, stage in zip(self.stages, self.stages[1:], strict=False):
            if not stage.input_done and upstream.finished():
                stage.input_done = True

    def _shutdown(self) -> None:
        if self.reads is not None:
            self.reads.shutdown()
            for stage in self.stages:
                stage.running.clear()
        for stage in self.stages:
            # Tasks still running are no longer wanted (the consumer left, or a UDF failed):
            # cancelling raises in them, so the finally of a generator UDF runs now.
            for meta_ref in list(stage.running):
                try:
                    ember.cancel(meta_ref)
                except Exception:  # best effort: the task may have finished meanwhile
                    pass
            for actor in list(stage.actors):
                try:
                    ember.kill(actor)
                except Exception:  # the actor is already gone: nothing to release
                    pass
            stage.actors.clear()
            stage.running.clear()
        self.progress.close()


class BundleStream(Iterator[Bundle]):
    """The output of one execution: an iterator of bundles that can also be told, from another
    thread, to stop (``request_stop``) while its ``next`` is waiting for work to finish."""

    def __init__(self, executor: StreamingExecutor) -> None:
        self._executor = executor
        self._run: Generator[Bundle, None, None] = executor.run()

    def __next__(self) -> Bundle:
        return next(self._run)

    def close(self) -> None:
        self._run.close()

    def request_stop(self) -> None:
        self._executor.stop_requested.set()


def execute(node: Node, context: DataContext | None = None, *, in_process: bool = False
            ) -> tuple[BundleStream, DatasetStats]:
    """Start streaming ``node``; returns the bundle iterator and the stats it fills in.
    ``in_process``: the bundles are consumed in this process, so reads that allow it may run
    here (their bundles then hold an ``InProcessBlock``, not an ObjectRef)."""
    executor = StreamingExecutor(node, context, in_process=in_process)
    return BundleStream(executor), executor.stats
