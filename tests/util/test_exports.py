"""Pin the public names of ember.util.state and ember.util.metrics."""

from __future__ import annotations

from ember.util import metrics, state

STATE_ALL = ["ActorState", "NodeState", "ObjectState", "TaskState", "get_actor", "get_log",
             "get_task", "list_actors", "list_nodes", "list_objects", "list_tasks",
             "summarize_tasks"]
METRICS_ALL = ["Counter", "Gauge", "Histogram", "Metric", "flush", "publish"]


def test_state_all_is_pinned():
    assert state.__all__ == STATE_ALL
    for name in STATE_ALL:
        assert getattr(state, name).__doc__, f"ember.util.state.{name} has no docstring"


def test_metrics_all_is_pinned():
    assert metrics.__all__ == METRICS_ALL
    for name in METRICS_ALL:
        assert getattr(metrics, name).__doc__, f"ember.util.metrics.{name} has no docstring"
