"""``/metrics``: everything the driver knows, in Prometheus' text format (via prometheus_client).

Three sources: the core's state (tasks and actors by state, object store bytes, resources), the
metrics recorded with ``ember.util.metrics`` anywhere in the program (serve's request counters
and latency histograms among them, summed over processes), and the libraries' views, turned into
gauges here: serve replicas and multiplexed models per replica, each dataset operator's rows,
rows/s, bytes and memory, each train run's last reported metrics, each rl run's last iteration.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _name(text: str) -> str:
    """A valid Prometheus label value stays as it is; metric names are checked on creation."""
    return str(text)


def render(status: dict[str, Any], merged: list[tuple[Any, dict[Any, Any]]],
           views: dict[str, dict[str, dict[str, Any]]]) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(status, merged, views))
    return bytes(generate_latest(registry))


class _Collector:
    def __init__(self, status: dict[str, Any], merged: list[tuple[Any, dict[Any, Any]]],
                 views: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.status, self.merged, self.views = status, merged, views

    def collect(self) -> Iterator[Any]:
        yield from self._core()
        yield from self._user()
        yield from self._serve()
        yield from self._data()
        yield from self._train()
        yield from self._rl()

    # -- the core ---------------------------------------------------------------------------
    def _core(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        status = self.status
        tasks = GaugeMetricFamily("ember_tasks", "Tasks and actor calls by state and function "
                                  "(FINISHED and FAILED count since the program started).",
                                  labels=["state", "name"])
        for name, entry in status.get("task_summary", {}).get("summary", {}).items():
            for state, count in entry["state_counts"].items():
                tasks.add_metric([state, name], count)
        yield tasks
        actors = GaugeMetricFamily("ember_actors", "Actors by state and class.",
                                   labels=["state", "class_name"])
        by_class: dict[tuple[str, str], int] = {}
        for row in status.get("actors", []):
            key = (row["state"], row["class_name"])
            by_class[key] = by_class.get(key, 0) + 1
        for (state, class_name), count in sorted(by_class.items()):
            actors.add_metric([state, class_name], count)
        yield actors
        used = GaugeMetricFamily("ember_object_store_bytes", "Object store bytes by where they "
                                 "lie: in shared memory, or spilled to disk.",
                                 labels=["node", "location"])
        capacity = GaugeMetricFamily("ember_object_store_capacity_bytes",
                                     "Object store capacity.", labels=["node"])
        objects = GaugeMetricFamily("ember_objects", "Objects in the object table.",
                                    labels=["node"])
        total = GaugeMetricFamily("ember_resources_total", "Schedulable resources.",
                                  labels=["node", "resource"])
        in_use = GaugeMetricFamily("ember_resources_used", "Resources held by running tasks "
                                   "and actors.", labels=["node", "resource"])
        for node in status.get("nodes", []):
            node_id = str(node.get("node_id"))
            used.add_metric([node_id, "in_memory"], node.get("object_store_used_bytes") or 0)
            used.add_metric([node_id, "spilled"], node.get("object_store_spilled_bytes") or 0)
            if node.get("object_store_capacity_bytes") is not None:
                capacity.add_metric([node_id], node["object_store_capacity_bytes"])
            if node.get("num_objects") is not None:
                objects.add_metric([node_id], node["num_objects"])
            for resource, amount in sorted((node.get("resources_total") or {}).items()):
                if resource != "object_store_memory":
                    total.add_metric([node_id, resource], amount)
            for resource, amount in sorted((node.get("resources_used") or {}).items()):
                in_use.add_metric([node_id, resource], amount)
        yield from (used, capacity, objects, total, in_use)

    # -- ember.util.metrics ---------------------------------------------------------------------
    def _user(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for family, series in self.merged:
            labels = list(family.tag_keys)
            if family.kind == "counter":
                metric: Any = CounterMetricFamily(family.name, family.description or family.name,
                                                  labels=labels)
                for tags, value in series.items():
                    metric.add_metric(_values(tags, labels), value)
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(family.name, family.description or family.name,
                                           labels=labels)
                for tags, value in series.items():
                    metric.add_metric(_values(tags, labels), value)
            else:
                metric = HistogramMetricFamily(family.name, family.description or family.name,
                                               labels=labels)
                for tags, value in series.items():
                    counts, total_sum = value[:-2], value[-2]
                    cumulative, buckets = 0.0, []
                    for bound, count in zip([*family.boundaries, math.inf], counts,
                                            strict=True):
                        cumulative += count
                        buckets.append(("+Inf" if bound == math.inf else _le(bound), cumulative))
                    metric.add_metric(_values(tags, labels), buckets, total_sum)
            yield metric

    # -- the libraries' views -------------------------------------------------------------------
    def _serve(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        replicas = GaugeMetricFamily("serve_deployment_replicas", "Running replicas of a "
                                     "deployment.", labels=["application", "deployment"])
        target = GaugeMetricFamily("serve_deployment_target_replicas", "Replicas a "
                                   "deployment is scaling to.",
                                   labels=["application", "deployment"])
        healthy = GaugeMetricFamily("serve_deployment_replica_healthy", "1 for a replica that "
                                    "is running and passed its health checks.",
                                    labels=["application", "deployment", "replica"])
        models = GaugeMetricFamily("serve_num_multiplexed_models", "Models loaded on a "
                                   "replica.", labels=["application", "deployment", "replica"])
        for app, view in self.views.get("serve", {}).items():
            for name, dep in ((view.get("state") or {}).get("deployments") or {}).items():
                running = [r for r in dep.get("replicas", []) if r.get("state") == "RUNNING"]
                replicas.add_metric([app, name], len(running))
                target.add_metric([app, name], dep.get("target_replicas", 0))
                for replica in dep.get("replicas", []):
                    rid = str(replica.get("replica_id"))
                    healthy.add_metric([app, name, rid],
                                       1.0 if replica.get("state") == "RUNNING" else 0.0)
                    models.add_metric([app, name, rid], len(replica.get("models") or []))
        yield from (replicas, target, healthy, models)

    def _data(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["dataset", "operator"]
        rows = GaugeMetricFamily("ember_data_operator_output_rows", "Rows an operator has "
                                 "output.", labels=labels)
        rate = GaugeMetricFamily("ember_data_operator_rows_per_second", "An operator's output "
                                 "rows per second of the dataset's run.", labels=labels)
        out_bytes = GaugeMetricFamily("ember_data_operator_output_bytes", "Bytes an operator "
                                      "has output.", labels=labels)
        memory = GaugeMetricFamily("ember_data_operator_bytes_in_flight", "Bytes of an "
                                   "operator's blocks held now (queued and running).",
                                   labels=labels)
        for key, view in self.views.get("data", {}).items():
            for op in (view.get("state") or {}).get("operators", []):
                values = [key, str(op.get("name"))]
                rows.add_metric(values, op.get("rows", 0))
                rate.add_metric(values, op.get("rows_per_s", 0.0))
                out_bytes.add_metric(values, op.get("bytes", 0))
                memory.add_metric(values, op.get("bytes_in_flight", 0))
        yield from (rows, rate, out_bytes, memory)

    def _train(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        reported = GaugeMetricFamily("ember_train_reported", "The last value of each numeric "
                                     "metric a train run reported.", labels=["run", "metric"])
        reports = GaugeMetricFamily("ember_train_reports", "Reports a train run made.",
                                    labels=["run"])
        for run, view in self.views.get("train", {}).items():
            state = view.get("state") or {}
            reports.add_metric([run], state.get("reports", 0))
            for metric, value in sorted((state.get("last_metrics") or {}).items()):
                number = _number(value)
                if number is not None:
                    reported.add_metric([run, _name(metric)], number)
        yield from (reported, reports)

    def _rl(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        stats = GaugeMetricFamily("ember_rl_iteration_stat", "A numeric result of an rl run's "
                                  "last training iteration.", labels=["run", "stat"])
        for run, view in self.views.get("rl", {}).items():
            events = view.get("events") or []
            if not events:
                continue
            for stat, value in sorted(events[-1].items()):
                number = _number(value)
                if number is not None:
                    stats.add_metric([run, _name(stat)], number)
        yield stats


def _le(bound: float) -> str:
    return repr(float(bound))


def _values(tags: Any, labels: list[str]) -> list[str]:
    found = dict(tags)
    return [str(found.get(label, "")) for label in labels]
