"""What the driver knows beyond the scheduler's records: metrics, library views and logs.

Every process has one ``Store``. User metrics (``ember.util.metrics``) and library views
(``ember.util.metrics.publish``: serve's deployments, a dataset's operators, a train run's
reports, rl iterations) are recorded in the store of the process that makes them. In the
driver that store is the one the dashboard, the ``/metrics`` endpoint and the CLI read. In a
worker, a flusher thread (started on first use) sends what changed to the driver every
``FLUSH_S`` seconds through the backend (``set_sender``); the driver merges it into its store
under the worker's source id. This is the one hook libraries publish through: they call the
public ``ember.util.metrics`` API and never see a backend.

Values are cumulative per source (a counter's total in that process), so a lost or repeated
batch never double-counts: counters and histograms are summed over sources, a gauge shows the
value set last by any source, and a source's gauges go when its process ends.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

FLUSH_S = 0.5
MAX_EVENTS_PER_VIEW = 2000
MAX_KEYS_PER_KIND = 200
LOG_LINES_PER_PROCESS = 2000
PROCESSES_KEPT = 400
HERE = "here"  # the source id of values recorded in this process

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """A metric's identity: the same name must always mean the same kind and tag keys."""

    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


class _View:
    __slots__ = ("events", "state", "updated")

    def __init__(self) -> None:
        self.state: Any = None
        self.events: deque[Any] = deque(maxlen=MAX_EVENTS_PER_VIEW)
        self.updated = 0.0


class LogLine:
    __slots__ = ("seq", "stream", "task_id", "text", "time")

    def __init__(self, seq: int, when: float, stream: str, text: str, task_id: int | None
                 ) -> None:
        self.seq, self.time, self.stream, self.text, self.task_id = (
            seq, when, stream, text, task_id)


class ProcessLog:
    """The last lines one worker process wrote to its stdout and stderr."""

    __slots__ = ("actor_id", "alive", "lines", "name", "pid", "uid")

    def __init__(self, uid: Any, name: str, actor_id: int | None) -> None:
        self.uid = uid
        self.name = name
        self.actor_id = actor_id
        self.pid: int | None = None
        self.alive = True
        self.lines: deque[LogLine] = deque(maxlen=LOG_LINES_PER_PROCESS)


class Store:
    """One process's metrics and views; in the driver, also every worker's, and the logs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.families: dict[str, Family] = {}
        # name -> source -> tags -> value. A counter's value is a float, a gauge's
        # (value, when set), a histogram's [bucket counts..., sum, count].
        self.values: dict[str, dict[Any, dict[Tags, Any]]] = {}
        self.dirty: set[str] = set()
        self.views: dict[str, OrderedDict[str, _View]] = {}
        self.pending_views: dict[tuple[str, str], Any] = {}
        self.pending_events: list[tuple[str, str, Any]] = []
        self.logs: OrderedDict[Any, ProcessLog] = OrderedDict()
        self._log_seq = 0
        self.is_driver = False

    # -- metrics --------------------------------------------------------------------------
    def register(self, family: Family) -> Family:
        with self.lock:
            return self._register(family)

    def _register(self, family: Family) -> Family:
        known = self.families.get(family.name)
        if known is None:
            self.families[family.name] = family
            return family
        if (known.kind, known.tag_keys, known.boundaries) != (
                family.kind, family.tag_keys, family.boundaries):
            raise ValueError(
                f"metric {family.name!r} is already defined as a {known.kind} with tag_keys "
                f"{known.tag_keys} and boundaries {known.boundaries}; a metric name must keep "
                "one kind, tag_keys and boundaries: use another name for the new one"
            )
        return known

    def _series(self, name: str) -> dict[Tags, Any]:
        by_source = self.values.get(name)
        if by_source is None:
            by_source = self.values[name] = {}
        series = by_source.get(HERE)
        if series is None:
            series = by_source[HERE] = {}
        self.dirty.add(name)
        return series

    def inc(self, name: str, tags: Tags, amount: float) -> None:
        with self.lock:
            series = self._series(name)
            series[tags] = series.get(tags, 0.0) + amount
        _ensure_flusher()

    def set(self, name: str, tags: Tags, value: float) -> None:
        with self.lock:
            self._series(name)[tags] = (value, time.time())
        _ensure_flusher()

    def observe(self, family: Family, tags: Tags, value: float) -> None:
        with self.lock:
            series = self._series(family.name)
            counts = series.get(tags)
            if counts is None:
                counts = series[tags] = [0.0] * (len(family.boundaries) + 3)
            index = len(family.boundaries)
            for i, bound in enumerate(family.boundaries):
                if value <= bound:
                    index = i
                    break
            counts[index] += 1
            counts[-2] += value
            counts[-1] += 1
        _ensure_flusher()

    def merged(self) -> list[tuple[Family, dict[Tags, Any]]]:
        """Every metric with its series summed (counters, histograms) or latest (gauges) over
        the sources: what ``/metrics`` shows."""
        out = []
        with self.lock:
            for name, family in self.families.items():
                total: dict[Tags, Any] = {}
                for series in self.values.get(name, {}).values():
                    for tags, value in series.items():
                        if family.kind == "counter":
                            total[tags] = total.get(tags, 0.0) + value
                        elif family.kind == "gauge":
                            known = total.get(tags)
                            if known is None or value[1] >= known[1]:
                                total[tags] = value
                        else:
                            known = total.get(tags)
                            total[tags] = list(value) if known is None else [
                                a + b for a, b in zip(known, value, strict=True)]
                if family.kind == "gauge":
                    total = {tags: value[0] for tags, value in total.items()}
                out.append((family, total))
        return out

    # -- views ----------------------------------------------------------------------------
    def publish(self, kind: str, key: str, state: Any = None, event: Any = None) -> None:
        with self.lock:
            if self.is_driver:
                self._apply_view(kind, key, state, event)
                return
            if state is not None:
                self.pending_views[(kind, key)] = state
            if event is not None:
                self.pending_events.append((kind, key, event))
                if len(self.pending_events) > MAX_EVENTS_PER_VIEW:  # nobody takes them
                    del self.pending_events[: len(self.pending_events) // 2]
        _ensure_flusher()

    def _apply_view(self, kind: str, key: str, state: Any, event: Any) -> None:
        views = self.views.get(kind)
        if views is None:
            views = self.views[kind] = OrderedDict()
        view = views.get(key)
        if view is None:
            view = views[key] = _View()
            while len(views) > MAX_KEYS_PER_KIND:
                views.popitem(last=False)
        else:
            views.move_to_end(key)
        if state is not None:
            view.state = state
        if event is not None:
            view.events.append(event)
        view.updated = time.time()

    def view(self, kind: str) -> dict[str, dict[str, Any]]:
        """The views of one kind: key -> {"state", "events", "updated"}, oldest first."""
        with self.lock:
            return {key: {"state": v.state, "events": list(v.events), "updated": v.updated}
                    for key, v in self.views.get(kind, {}).items()}

    # -- worker -> driver -------------------------------------------------------------------
    def take_batch(self) -> dict[str, Any] | None:
        """In a worker: what changed since the last batch (None when nothing did)."""
        with self.lock:
            if not (self.dirty or self.pending_views or self.pending_events):
                return None
            metrics = []
            for name in self.dirty:
                series = self.values.get(name, {}).get(HERE, {})
                family = self.families[name]
                metrics.append((family.name, family.kind, family.description, family.tag_keys,
                                family.boundaries, dict(series)))
            self.dirty = set()
            batch = {"metrics": metrics, "views": self.pending_views,
                     "events": self.pending_events}
            self.pending_views = {}
            self.pending_events = []
            return batch

    def ingest(self, source: Any, batch: dict[str, Any]) -> None:
        """In the driver: merge a worker's batch, under that worker's source id."""
        with self.lock:
            for name, kind, description, tag_keys, boundaries, series in batch.get(
                    "metrics", ()):
                try:
                    self._register(Family(name, kind, description, tuple(tag_keys),
                                          tuple(boundaries)))
                except ValueError:  # best-effort telemetry: a clashing name is dropped
                    continue
                self.values.setdefault(name, {})[source] = series
            for (kind, key), state in batch.get("views", {}).items():
                self._apply_view(kind, key, state, None)
            for kind, key, event in batch.get("events", ()):
                self._apply_view(kind, key, None, event)

    def forget_source(self, source: Any) -> None:
        """A worker process ended: its gauges go (its counters' totals stay)."""
        with self.lock:
            for name, by_source in self.values.items():
                family = self.families.get(name)
                if family is not None and family.kind == "gauge":
                    by_source.pop(source, None)

    # -- logs ------------------------------------------------------------------------------
    def open_log(self, uid: Any, name: str, actor_id: int | None) -> ProcessLog:
        with self.lock:
            log = self.logs[uid] = ProcessLog(uid, name, actor_id)
            while len(self.logs) > PROCESSES_KEPT:
                oldest = next((k for k, v in self.logs.items() if not v.alive), None)
                if oldest is None:
                    break
                del self.logs[oldest]
            return log

    def add_lines(self, log: ProcessLog, stream: str, lines: Iterable[str],
                  task_id: int | None) -> list[LogLine]:
        now = time.time()
        added = []
        with self.lock:
            for text in lines:
                self._log_seq += 1
                line = LogLine(self._log_seq, now, stream, text, task_id)
                log.lines.append(line)
                added.append(line)
        return added

    def log_lines(self, select: Callable[[ProcessLog], bool], after: int = 0,
                  task_id: int | None = None) -> list[dict[str, Any]]:
        """Lines after sequence number ``after`` of the processes ``select`` picks, in order."""
        out: list[dict[str, Any]] = []
        with self.lock:
            for log in self.logs.values():
                if not select(log):
                    continue
                for line in log.lines:
                    if line.seq > after and (task_id is None or line.task_id == task_id):
                        out.append({"seq": line.seq, "time": line.time, "stream": line.stream,
                                    "text": line.text, "pid": log.pid, "name": log.name})
        out.sort(key=lambda line: line["seq"])
        return out

    def processes(self) -> list[ProcessLog]:
        with self.lock:
            return list(self.logs.values())


_store = Store()
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()
_sender: Callable[[dict[str, Any]], None] | None = None


def store() -> Store:
    """This process's store."""
    return _store


def become_driver() -> Store:
    """Called when this process starts a runtime: its store is the one that is served. What
    it recorded before (metrics made before ``ember.init``) stays."""
    global _store
    with _store.lock:
        _store.is_driver = True
        for (kind, key), state in _store.pending_views.items():
            _store._apply_view(kind, key, state, None)
        for kind, key, event in _store.pending_events:
            _store._apply_view(kind, key, None, event)
        _store.pending_views, _store.pending_events = {}, []
    return _store


def leave_driver() -> None:
    """The runtime stopped: a later ``ember.init`` starts with fresh views and logs (user
    metric objects keep their own totals, as a process's counters do)."""
    with _store.lock:
        _store.is_driver = False
        _store.views.clear()
        _store.logs.clear()
        for by_source in _store.values.values():
            for source in [s for s in by_source if s != HERE]:
                del by_source[source]


def set_sender(sender: Callable[[dict[str, Any]], None] | None) -> None:
    """In a worker: how batches reach the driver (the backend sets it when the worker starts).
    Without one (a process that is neither driver nor worker) values stay here."""
    global _sender
    _sender = sender


def flush() -> None:
    """Send what changed now (workers call it before they exit; the flusher every FLUSH_S)."""
    if _sender is None and not _store.is_driver:
        _ensure_flusher()  # in a Ray worker, finds the sender
    sender = _sender
    if sender is None or _store.is_driver:
        return
    batch = _store.take_batch()
    if batch is not None:
        try:
            sender(batch)
        except Exception:  # best-effort telemetry: a driver that went away takes nothing
            pass


def _ensure_flusher() -> None:
    global _flusher
    if _flusher is not None or _store.is_driver:
        return
    if _sender is None:
        if not _in_ray_worker():
            return
        from ember.core._api import current_backend

        current_backend()  # attaching ember to the Ray worker sets the sender
        if _sender is None:
            return
    with _flusher_lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_loop, name="ember-metrics", daemon=True)
            _flusher.start()


def _in_ray_worker() -> bool:
    """A Ray task or actor that has not used ember's API yet (without importing ray)."""
    worker_module = sys.modules.get("ray._private.worker")
    if worker_module is None:
        return False
    try:
        worker = worker_module.global_worker
        return bool(worker.connected) and worker.mode == worker_module.WORKER_MODE
    except AttributeError:
        return False


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_S)
        flush()


PREDICATES = ("=", "!=")


def filter_rows(rows: Iterable[dict[str, Any]], filters: list[tuple[str, str, Any]] | None,
                limit: int | None) -> list[dict[str, Any]]:
    """Rows whose columns match every ``(key, "=" | "!=", value)`` filter, at most ``limit``.

    As in Ray's state API, values compare as text and without regard to case, so
    ``("state", "=", "dead")`` matches ``"DEAD"`` and ``("pid", "=", "123")`` matches 123.
    """
    checks = []
    for item in filters or ():
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"a filter is a (key, predicate, value) tuple, got {item!r}")
        key, predicate, value = item
        if predicate not in PREDICATES:
            raise ValueError(f"filter predicate {predicate!r} is not supported (use '=' or "
                             "'!=')")
        checks.append((key, predicate == "=", _text(value)))
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit} must be >= 0")
    out: list[dict[str, Any]] = []
    if limit == 0:
        return out
    for row in rows:
        for key, equal, value in checks:
            if key not in row:
                raise ValueError(f"cannot filter on {key!r}: the columns are "
                                 f"{', '.join(sorted(row))}")
            if (_text(row[key]) == value) != equal:
                break
        else:
            out.append(row)
            if limit is not None and len(out) >= limit:
                break
    return out


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).lower()
