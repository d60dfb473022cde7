"""Time series for the dashboard's charts, sampled from the merged metrics: pure code (the
caller passes the time and the metrics in), tested without a server.

Serve's request metrics are cumulative counters and a latency histogram per replica. Every
sample sums them per deployment, takes the difference from the previous sample and turns it into
requests/s, errors/s and the p50/p99 latency of the requests that finished in between (the way
Prometheus' ``rate`` and ``histogram_quantile`` would).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

# serve's metric names (ember/serve/_observe.py records them, with Ray Serve's names)
REQUESTS = "serve_deployment_request_counter"
ERRORS = "serve_deployment_error_counter"
LATENCY = "serve_deployment_processing_latency_ms"
ONGOING = "serve_replica_processing_queries"

KEEP_POINTS = 600  # ten minutes at one sample a second


def quantile(boundaries: Sequence[float], counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a histogram with per-bucket (not cumulative) ``counts``: one per
    boundary (values <= it) and a last one above every boundary. Linear within a bucket, as
    Prometheus' ``histogram_quantile``; a quantile in the last bucket is the largest boundary.
    None when the histogram is empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q={q} must be between 0 and 1")
    if len(counts) != len(boundaries) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(boundaries)} boundaries: "
                         "there must be one more count than boundaries")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if i == len(boundaries):
                return float(boundaries[-1]) if boundaries else None
            low = float(boundaries[i - 1]) if i > 0 else 0.0
            high = float(boundaries[i])
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return float(boundaries[-1]) if boundaries else None


def _by_deployment(series: dict[Any, Any]) -> dict[str, Any]:
    """Sum a metric's series per ``application/deployment`` tag pair."""
    out: dict[str, Any] = {}
    for tags, value in series.items():
        labels = dict(tags)
        key = f"{labels.get('application', '')}/{labels.get('deployment', '')}"
        known = out.get(key)
        if isinstance(value, list):
            out[key] = list(value) if known is None else [a + b for a, b in zip(
                known, value, strict=True)]
        else:
            out[key] = value if known is None else known + value
    return out


class ServeSeries:
    """Per-deployment points: ``{"t", "rps", "eps", "p50", "p99", "ongoing"}``."""

    def __init__(self, keep: int = KEEP_POINTS) -> None:
        self._keep = keep
        self._last: dict[str, tuple[float, float, float, list[float] | None]] = {}
        self._points: dict[str, deque[dict[str, Any]]] = {}
        self._boundaries: tuple[float, ...] = ()

    def sample(self, now: float, merged: Sequence[tuple[Any, dict[Any, Any]]]) -> None:
        """Take one sample at time ``now`` of ``merged`` ((family, series) pairs)."""
        found = {family.name: (family, series) for family, series in merged}
        if REQUESTS not in found:
            return
        requests = _by_deployment(found[REQUESTS][1])
        errors = _by_deployment(found[ERRORS][1]) if ERRORS in found else {}
        ongoing = _by_deployment(found[ONGOING][1]) if ONGOING in found else {}
        latency: dict[str, Any] = {}
        if LATENCY in found:
            self._boundaries = tuple(found[LATENCY][0].boundaries)
            latency = _by_deployment(found[LATENCY][1])
        for key, total in requests.items():
            failed = errors.get(key, 0.0)
            buckets = latency.get(key)
            previous = self._last.get(key)
            self._last[key] = (now, total, failed, buckets)
            if previous is None or now <= previous[0]:
                continue
            elapsed = now - previous[0]
            point: dict[str, Any] = {
                "t": now, "rps": max(0.0, total - previous[1]) / elapsed,
                "eps": max(0.0, failed - previous[2]) / elapsed,
                "ongoing": ongoing.get(key, 0.0), "p50": None, "p99": None,
            }
            if buckets is not None:
                before = previous[3] or [0.0] * len(buckets)
                delta = [max(0.0, a - b) for a, b in zip(buckets[:-2], before[:-2], strict=True)]
                point["p50"] = quantile(self._boundaries, delta, 0.5)
                point["p99"] = quantile(self._boundaries, delta, 0.99)
            points = self._points.get(key)
            if points is None:
                points = self._points[key] = deque(maxlen=self._keep)
            points.append(point)

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return {key: list(points) for key, points in self._points.items()}
