"""Plain records the local driver keeps about work, workers, actors and generators."""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ember.core import _serialization as ser
from ember.core._remote import ActorMeta
from ember.core.local._protocol import DEFAULT_BACKPRESSURE, EMPTY_ARGS
from ember.core.local._transport import DriverChannel, SpinGate

_PIPELINE_DEPTH = 16  # tasks queued on one busy worker, for functions known to be short
_SHORT_TASK_S = 0.002
_MAX_TASK_WORKERS = 256
_EMPTY_ARGS = EMPTY_ARGS


class _Work:
    """A task, or a call of an actor method."""

    __slots__ = (
        "actor", "args", "backpressure", "cancelled", "deps", "env", "fn_id", "gen_id", "gpu_ids",
        "id", "key", "method", "name", "parent", "request", "retries_left", "retry_exceptions",
        "return_ids", "waiting",
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


class _Worker:
    __slots__ = (
        "actor",
        "blocked",
        "chan",
        "claim",
        "claim_time",
        "closing",
        "direct",
        "doomed",
        "eof",
        "exitcode",
        "fd",
        "held",
        "inflight",
        "known_fns",
        "outbox",
        "pid",
        "poller",
        "ready",
        "spin_gate",
        "uid",
    )

    def __init__(self, uid: int, chan: DriverChannel) -> None:
        self.uid = uid
        self.chan = chan
        self.fd = chan.fileno()
        self.direct: int | None = None  # wake pipe of a caller reading this socket itself
        self.poller: tuple[Any, int, int] | None = None  # (poll object, wake pipe r, w)
        # Whether a caller reading this socket directly spins first (see _transport.SpinGate).
        self.spin_gate = SpinGate()
        # The object id of a call's result whose caller is expected to read the reply itself
        # (see LocalBackend._claim); the reactor does not watch the socket meanwhile.
        self.claim: int | None = None
        self.claim_time = 0.0
        self.closing = False
        self.pid: int | None = None
        self.eof = False
        self.doomed = False  # killed before its pid was known: kill it once the pid arrives
        self.exitcode: int | None = None
        self.ready = False
        self.blocked = False
        self.inflight: deque[_Work] = deque()
        self.known_fns: set[str] = set()
        self.held: dict[int, int] = {}
        self.outbox: list[Any] = []
        self.actor: _Actor | None = None

    def release(self) -> None:
        """Close the descriptors, unless a caller is polling them directly: then that caller
        closes them when it stops (so their numbers cannot be reused under its feet)."""
        if self.direct is not None:
            self.closing = True
        else:
            self.close()

    def close(self) -> None:
        self.chan.close()
        if self.poller is not None:
            os.close(self.poller[1])
            os.close(self.poller[2])
            self.poller = None


class _Actor:
    __slots__ = (
        "args", "class_code", "class_id", "death", "deps", "env", "error", "exited", "gpu_ids",
        "handles",
        "holds", "id",
        "inflight", "max_concurrency", "max_task_retries", "meta", "name", "namespace",
        "no_restart", "pinned", "queue", "request", "restarts", "restarts_left", "state",
        "worker",
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


class _Waiter:
    """Blocks a caller until ``count`` objects are ready: one lock, released by the reactor."""

    __slots__ = ("count", "lock")

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock = threading.Lock()
        self.lock.acquire()

    def __call__(self, _oid: int) -> None:
        self.count -= 1
        if self.count == 0:
            self.lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=-1 if timeout is None else timeout)


def _kill(worker: _Worker) -> None:
    if worker.pid is None:
        worker.doomed = True
        return
    try:
        os.kill(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _lost(oid: int) -> tuple[ser.Stored, bool]:
    from ember.errors import ObjectLostError

    return ser.dumps(ObjectLostError(f"object {oid:016x} was freed"), None, 0), True
