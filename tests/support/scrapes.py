"""Reading a Prometheus exposition in tests: samples by name and labels, counter growth."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: Samples, name: str, **labels: str) -> float | None:
    return got.get((name, tuple(sorted(labels.items()))))


def total(got: Samples, name: str) -> float:
    """The sum of a metric's samples over all its labels."""
    return sum(v for (n, _), v in got.items() if n == name)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a counter grew (counters are per process, and tests share the process)."""
    return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)


async def scrape(api: httpx.AsyncClient, **headers: str) -> Samples:
    response = await api.get("/metrics", headers=headers)
    assert response.status_code == 200
    return samples(response.text)
