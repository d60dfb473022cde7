"""Your own metrics, with Ray's names: ``Counter``, ``Gauge``, ``Histogram``.

Make and record them anywhere: in the driver, in a task, in an actor. Values recorded in a
worker reach the driver within about half a second, where ``/metrics`` (Prometheus' text
format, served beside the dashboard) shows them summed over processes (a gauge shows the value
set last)::

    from ember.util.metrics import Counter

    served = Counter("images_served", description="Images served.", tag_keys=("model",))
    served.set_default_tags({"model": "resnet"})
    served.inc()                       # in a task, an actor or the driver

``publish`` is how a library (or your code) adds a view of its own to the dashboard: ember's
serve, data, train and rl publish theirs through it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ember.core import _observe

__all__ = ["Counter", "Gauge", "Histogram", "Metric", "flush", "publish"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TAG = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Metric:
    """What every metric has: a name, a description and the tag keys each value carries."""

    _kind = ""

    def __init__(self, name: str, description: str = "",
                 tag_keys: Sequence[str] | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not valid: use letters, digits, '_' and "
                             "':' and do not start with a digit (e.g. 'requests_served')")
        if isinstance(tag_keys, str):
            raise TypeError(f"tag_keys must be a tuple of strings, got the string {tag_keys!r}; "
                            f"write tag_keys=({tag_keys!r},)")
        keys = tuple(tag_keys or ())
        for key in keys:
            if not isinstance(key, str) or not _TAG.match(key) or key.startswith("__"):
                raise ValueError(f"tag key {key!r} of metric {name!r} is not valid: use "
                                 "letters, digits and '_' (not starting with '__')")
        if len(set(keys)) != len(keys):
            raise ValueError(f"metric {name!r} names a tag key twice: {keys}")
        self._name = name
        self._description = description
        self._tag_keys = keys
        self._set_defaults({})
        self._family = _observe.store().register(_observe.Family(
            name, self._kind, description, keys, self._boundaries()))

    def _boundaries(self) -> tuple[float, ...]:
        return ()

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt (and so registered) in the process that unpickles it: a metric made in the
        # driver and used inside a task records into that worker's store.
        return (_rebuild, (type(self), self._name, self._description, self._tag_keys,
                           self._boundaries(), self._default_tags))

    @property
    def info(self) -> dict[str, Any]:
        """The metric's name, description, tag keys and default tags (Ray's ``Metric.info``)."""
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def set_default_tags(self, default_tags: dict[str, str]) -> Metric:
        """Tags every recording carries unless it passes its own; returns the metric."""
        self._check_keys(default_tags)
        self._set_defaults({k: str(v) for k, v in default_tags.items()})
        return self

    def _set_defaults(self, default_tags: dict[str, str]) -> None:
        self._default_tags = default_tags
        # What a recording without tags carries when the defaults name every tag key: made
        # once here, not per recording (a serve replica records four values per request).
        self._default_key: _observe.Tags | None = (
            tuple((key, default_tags[key]) for key in self._tag_keys)
            if all(key in default_tags for key in self._tag_keys) else None)

    def _check_keys(self, tags: dict[str, Any]) -> None:
        unknown = sorted(set(tags) - set(self._tag_keys))
        if unknown:
            raise ValueError(f"metric {self._name!r} got tags {unknown} that are not among its "
                             f"tag_keys {self._tag_keys}; declare them in tag_keys")

    def _tags(self, tags: dict[str, Any] | None) -> _observe.Tags:
        if not tags:
            if self._default_key is not None:
                return self._default_key
            merged = self._default_tags
        else:
            self._check_keys(tags)
            merged = {**self._default_tags, **{k: str(v) for k, v in tags.items()}}
        try:
            return tuple((key, merged[key]) for key in self._tag_keys)
        except KeyError:
            missing = [key for key in self._tag_keys if key not in merged]
            raise ValueError(f"metric {self._name!r} needs a value for tags {missing}: pass "
                             "tags={...} or set_default_tags(...)") from None


class Counter(Metric):
    """A total that only goes up: ``inc(value=1.0, tags=None)``."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        """Add ``value`` (positive) to the counter for these ``tags`` (merged over the defaults)."""
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"Counter {self._name!r}: inc({value!r}) needs a positive number")
        _observe.store().inc(self._name, self._tags(tags), float(value))


class Gauge(Metric):
    """A value that goes up and down: ``set(value, tags=None)``."""

    _kind = "gauge"

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        """Set the gauge to ``value`` for these ``tags`` (merged over the defaults)."""
        if not isinstance(value, (int, float)):
            raise TypeError(f"Gauge {self._name!r}: set({value!r}) needs a number")
        _observe.store().set(self._name, self._tags(tags), float(value))


class Histogram(Metric):
    """How values are distributed over ``boundaries``: ``observe(value, tags=None)``."""

    _kind = "histogram"

    def __init__(self, name: str, description: str = "",
                 boundaries: Sequence[float] | None = None,
                 tag_keys: Sequence[str] | None = None) -> None:
        bounds = tuple(float(b) for b in (boundaries or ()))
        if not bounds:
            raise ValueError(f"Histogram {name!r} needs boundaries, e.g. "
                             "boundaries=[1, 10, 100, 1000]")
        if any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"Histogram {name!r}: boundaries {list(bounds)} must be positive "
                             "and strictly increasing")
        self._bounds = bounds
        super().__init__(name, description, tag_keys)

    def _boundaries(self) -> tuple[float, ...]:
        return self._bounds

    @property
    def info(self) -> dict[str, Any]:
        """``Metric.info`` plus the histogram's bucket ``boundaries``."""
        return {**super().info, "boundaries": list(self._bounds)}

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        """Record one observation of ``value`` for these ``tags`` (merged over the defaults)."""
        if not isinstance(value, (int, float)):
            raise TypeError(f"Histogram {self._name!r}: observe({value!r}) needs a number")
        _observe.store().observe(self._family, self._tags(tags), float(value))


def _rebuild(cls: type[Metric], name: str, description: str, tag_keys: tuple[str, ...],
             boundaries: tuple[float, ...], default_tags: dict[str, str]) -> Metric:
    if cls is Histogram or issubclass(cls, Histogram):
        metric: Metric = cls(name, description, boundaries, tag_keys)
    else:
        metric = cls(name, description, tag_keys)
    metric._set_defaults(dict(default_tags))
    return metric


def publish(view: str, key: str, *, state: dict[str, Any] | None = None,
            event: dict[str, Any] | None = None) -> None:
    """Show something in the dashboard: ``state`` replaces the view's current state, ``event``
    is appended to its history (the last 2000 are kept). Values must be plain data (numbers,
    strings, lists, dicts). ember's libraries publish the views ``"serve"`` (key: application),
    ``"data"`` (a dataset run), ``"train"`` (a run's name) and ``"rl"`` (an algorithm run).

    Works in the driver and inside tasks and actors (the values travel to the driver); before
    ``ember.init`` they wait in this process.
    """
    if not isinstance(view, str) or not view:
        raise ValueError(f"view must be a non-empty string, got {view!r}")
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    if state is None and event is None:
        raise ValueError("publish() needs a state=, an event=, or both")
    _observe.store().publish(view, key, state, event)


def flush() -> None:
    """In a task or an actor: send what this process recorded to the driver now (it happens
    every half second anyway). Does nothing in the driver."""
    _observe.flush()
