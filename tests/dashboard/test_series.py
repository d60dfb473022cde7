"""The dashboard's serve charts: quantiles from histogram buckets and per-second rates (pure)."""

from __future__ import annotations

import pytest

from ember.core._observe import Family
from ember.dashboard._series import ServeSeries, quantile

BOUNDS = (10.0, 20.0, 50.0)


@pytest.mark.parametrize(("counts", "q", "expected"), [
    ([10, 0, 0, 0], 0.5, 5.0),        # half way through the first bucket (0..10)
    ([0, 10, 0, 0], 0.5, 15.0),       # half way through 10..20
    ([5, 5, 0, 0], 0.5, 10.0),        # the 50th percentile lies on a boundary
    ([0, 0, 100, 0], 0.99, 49.7),     # near the top of 20..50
    ([0, 0, 0, 3], 0.5, 50.0),        # above every boundary: the largest one
    ([0, 0, 0, 0], 0.5, None),        # no requests
])
def test_quantile_interpolates_within_a_bucket(counts, q, expected):
    value = quantile(BOUNDS, counts, q)
    assert value == (None if expected is None else pytest.approx(expected))


def test_quantile_checks_its_input():
    with pytest.raises(ValueError, match="one more count than boundaries"):
        quantile(BOUNDS, [1, 2], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        quantile(BOUNDS, [1, 0, 0, 0], 1.5)


REQUESTS = Family("serve_deployment_request_counter", "counter", "", ("application",
                                                                        "deployment", "replica"))
ERRORS = Family("serve_deployment_error_counter", "counter", "", REQUESTS.tag_keys)
LATENCY = Family("serve_deployment_processing_latency_ms", "histogram", "", REQUESTS.tag_keys,
                 BOUNDS)


def tags(replica: str) -> tuple[tuple[str, str], ...]:
    return (("application", "app"), ("deployment", "Model"), ("replica", replica))


def sample(requests: dict, errors: dict, latency: dict) -> list:
    return [(REQUESTS, requests), (ERRORS, errors), (LATENCY, latency)]


def test_rates_and_latency_are_per_deployment_and_per_interval():
    series = ServeSeries()
    series.sample(100.0, sample({tags("r1"): 10.0, tags("r2"): 10.0}, {},
                                {tags("r1"): [20, 0, 0, 0, 100.0, 20]}))
    assert series.history() == {}  # one sample: no interval yet

    # two seconds later: 40 more requests over two replicas, 4 failed; the 40 new latencies
    # all lie in 20..50 ms, whatever came before
    series.sample(102.0, sample({tags("r1"): 30.0, tags("r2"): 30.0}, {tags("r2"): 4.0},
                                {tags("r1"): [20, 0, 20, 0, 900.0, 40],
                                 tags("r2"): [0, 0, 20, 0, 700.0, 20]}))

    [point] = series.history()["app/Model"]
    assert point["t"] == 102.0
    assert point["rps"] == pytest.approx(20.0)
    assert point["eps"] == pytest.approx(2.0)
    assert point["p50"] == pytest.approx(35.0)
    assert point["p99"] == pytest.approx(49.7)


def test_an_idle_interval_has_no_latency():
    series = ServeSeries()
    state = sample({tags("r1"): 5.0}, {}, {tags("r1"): [5, 0, 0, 0, 10.0, 5]})
    series.sample(1.0, state)
    series.sample(2.0, state)

    [point] = series.history()["app/Model"]
    assert (point["rps"], point["p50"], point["p99"]) == (0.0, None, None)


def test_history_is_bounded():
    series = ServeSeries(keep=3)
    for t in range(10):
        series.sample(float(t), sample({tags("r1"): float(t)}, {}, {}))
    assert [p["t"] for p in series.history()["app/Model"]] == [7.0, 8.0, 9.0]
