"""Helpers for the tests that read what the driver serves."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ember.dashboard import _server


def scrape() -> dict[str, dict[tuple, float]]:
    """The driver's /metrics, parsed by prometheus_client: name -> sorted labels -> value."""
    service = _server.current()
    assert service is not None, "no dashboard service: is ember initialized?"
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(service.metrics_text().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out
