"""Counting what load mode sends and how long the daemon takes to answer. Pure: callers pass
`now`, latencies and outcomes."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

QUANTILES: Final = (50, 95, 99)
RESERVOIR_SIZE: Final = 100_000  # latencies kept for the run's summary: flat memory at any rate


def percentiles(samples: Sequence[float], qs: Sequence[int] = QUANTILES) -> dict[int, float]:
    """The `qs` percentiles of `samples` (inclusive method, so p99 of a few samples stays within
    them); NaN when there are none."""
    if not samples:
        return {q: math.nan for q in qs}
    if len(samples) == 1:
        return {q: samples[0] for q in qs}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {q: cuts[q - 1] for q in qs}


@dataclass
class Reservoir:
    """A uniform random sample of at most `size` values out of however many were offered
    (Vitter's algorithm R)."""

    rng: random.Random
    size: int = RESERVOIR_SIZE
    seen: int = 0
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value


@dataclass
class Tally:
    """Outcomes over a period: reports the daemon committed, RPCs, failed RPCs by status code,
    reports a batch ack listed by code (including committed ones whose version was not
    stored), and latencies in seconds."""

    started: float
    reports: int = 0
    rpcs: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def line(self, label: str, now: float, latencies: Sequence[float] | None = None) -> str:
        """One logfmt line, readable by people and by `key=value` parsers."""
        elapsed = max(now - self.started, 1e-9)
        pct = percentiles(self.latencies if latencies is None else latencies)
        fields = {
            "seconds": f"{elapsed:.1f}",
            "reports_per_s": f"{self.reports / elapsed:.1f}",
            "rpcs_per_s": f"{self.rpcs / elapsed:.1f}",
            "reports": str(self.reports),
            "rpcs": str(self.rpcs),
            "errors": str(sum(self.errors.values())),
            "error_codes": _codes(self.errors),
            "rejected": _codes(self.rejected),
            **{f"p{q}_ms": f"{v * 1000:.2f}" for q, v in pct.items()},
        }
        return " ".join([label, *(f"{k}={v}" for k, v in fields.items())])


def _codes(counts: Counter[str]) -> str:
    return ",".join(f"{code}:{n}" for code, n in sorted(counts.items())) or "-"
