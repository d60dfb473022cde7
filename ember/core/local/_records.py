"""Plain records the local scheduler keeps about work, workers, actors and generators.

Pure data: no sockets, processes or locks. The I/O layer keeps its own record of each worker's
process and socket (``_io.Conn``) and hangs it on ``_Worker.conn``; the scheduler never looks
at it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ember.core import _serialization as ser
from ember.core._remote import ActorMeta
from ember.core.local._protocol import DEFAULT_BACKPRESSURE, EMPTY_ARGS

# The scheduler's instructions to the I/O layer (see _scheduler's docstring).
SPAWN = "spawn"
KILL = "kill"
INTERRUPT = "interrupt"
WAKE = "wake"
TIMER = "timer"
Instruction = tuple[Any, ...]

_PIPELINE_DEPTH = 16  # tasks queued on one busy worker, for functions known to be short
_SHORT_TASK_S = 0.002
_MAX_TASK_WORKERS = 256
_EMPTY_ARGS = EMPTY_ARGS


class _Work:
    """A task, or a call of an actor method."""

    __slots__ = (
        "actor", "args", "backpressure", "cancelled", "deps", "env", "fn_id", "gen_id", "gpu_ids",
        "group", "id", "key", "method", "name", "parent", "request", "retries_left",
        "retry_exceptions", "return_ids", "waiting",
    )

    def __init__(self) -> None:
        self.id = 0
        self.name = ""
        self.args: ser.Stored = _EMPTY_ARGS
        self.deps: list[int] = []
        self.fn_id: str | None = None
        self.key: tuple[Any, ...] = ()
        self.request: dict[str, float] = {}
        self.retries_left = 0
        self.retry_exceptions: Any = False
        self.return_ids: list[int] = []
        self.gen_id: int | None = None
        self.gpu_ids: tuple[str, ...] = ()
        self.cancelled = False
        self.waiting = 0
        self.actor: _Actor | None = None
        self.method: str | None = None
        self.parent: int | None = None
        self.backpressure = DEFAULT_BACKPRESSURE
        self.env: dict[str, Any] | None = None  # its runtime_env, as the worker applies it
        self.group: Any = None  # (placement group, captures its children) when placed in one


class _Worker:
    """A worker process as the scheduler sees it: what it runs and what it holds."""

    __slots__ = ("actor", "blocked", "conn", "held", "inflight", "known_fns", "outbox", "ready",
                 "uid")

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.ready = False  # it said "ready": it takes work now
        self.blocked = False  # its task waits in a nested get/wait: its CPUs are lent out
        self.inflight: deque[_Work] = deque()  # tasks sent to it, the running one first
        self.known_fns: set[str] = set()  # functions whose code it has been sent
        self.held: dict[int, int] = {}  # object id -> references its process holds
        self.outbox: list[Any] = []  # messages for it that the I/O layer has still to send
        self.actor: _Actor | None = None
        self.conn: Any = None  # the I/O layer's record of its process (opaque here)


class _Actor:
    __slots__ = (
        "args", "class_code", "class_id", "death", "deps", "env", "error", "exited", "gpu_ids",
        "group", "handles", "holds", "id", "inflight", "max_concurrency", "max_task_retries",
        "meta", "name", "namespace", "no_restart", "pinned", "queue", "request", "restarts",
        "restarts_left", "state", "worker",
    )

    def __init__(self) -> None:
        self.id = 0
        self.class_id = ""
        self.class_code = b""
        self.args: ser.Stored = _EMPTY_ARGS
        self.deps: list[int] = []
        self.request: dict[str, float] = {}
        self.meta = ActorMeta("?")
        self.name: str | None = None
        self.namespace = "default"
        self.max_concurrency: int | None = None
        self.max_task_retries = 0
        self.restarts_left = 0
        self.queue: deque[_Work] = deque()
        self.inflight: dict[int, _Work] = {}
        self.worker: _Worker | None = None
        self.state = "pending"  # pending -> alive -> (restarting -> alive)* -> dead
        self.handles = 0
        self.pinned = False
        self.no_restart = False
        self.exited = ""  # why it ended though nobody killed it (exit_actor(), its owner died)
        self.death = ""
        self.restarts = 0
        self.gpu_ids: tuple[str, ...] = ()
        self.holds = False  # its resources are taken from the pool (it has been started)
        self.env: dict[str, Any] | None = None  # its runtime_env, applied for its whole life
        self.group: Any = None  # (placement group, captures its children) when placed in one
        self.error: BaseException | None = None  # what its calls raise once it is dead


class _Generator:
    __slots__ = ("consumed", "finished", "items", "produced", "refs", "waiters", "watchers",
                 "work", "worker")

    def __init__(self, work: _Work) -> None:
        self.work = work
        self.worker: _Worker | None = None
        self.items: dict[int, int] = {}
        self.produced = 0
        self.consumed = 0
        self.finished = False
        self.refs = 0
        self.waiters: list[tuple[int, Callable[[int | None], None]]] = []
        # Called (once) at the next item or at the end, without taking anything: ember.wait.
        self.watchers: list[Callable[[int], None]] = []


def _lost(oid: int) -> tuple[ser.Stored, bool]:
    from ember.errors import ObjectLostError

    return ser.dumps(ObjectLostError(f"object {oid:016x} was freed"), None, 0), True
