"""What gateway mode remembers for the soak to check against the daemon: per sensor, when its
last report was sent and acknowledged; every silence long enough to matter (from a sent report
to the next one); and per period the offered and acknowledged counts, ack latencies and errors.

Pure: callers pass wall-clock times (the daemon's timestamps are wall clock, so the soak
compares like with like) and outcomes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from .stats import percentiles


@dataclass
class Period:
    """One period's counts: offered (sent), acknowledged (committed) and failed (not committed,
    or not known to be) as their answers came in, errors by code."""

    started: float
    offered: int = 0
    acked: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def as_json(self, now: float) -> dict[str, Any]:
        pct = percentiles(self.latencies, (50, 99))
        seconds = max(now - self.started, 1e-9)
        return {
            "at": now,
            "seconds": seconds,
            "offered": self.offered,
            "acked": self.acked,
            "failed": self.failed,
            "ack_p50_ms": _ms(pct[50]),
            "ack_p99_ms": _ms(pct[99]),
            "errors": dict(self.errors),
        }


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: unknown and open-ended are null."""
    return value if math.isfinite(value) else None


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


class AckRecord:
    """Per-sensor send/ack times and the silences longer than `gap_min` seconds.

    A silence opens at a sensor's report and closes at its next one; only those opened by an
    acknowledged report are "expected offline" candidates (a report that failed may or may not
    have committed, so the daemon's clock for that sensor is unknown)."""

    def __init__(self, serials: list[str], gap_min: float, now: float) -> None:
        self.serials = serials
        self._index = {s: i for i, s in enumerate(serials)}
        self.gap_min = gap_min
        self.sent = [math.nan] * len(serials)
        self.acked_sent = [math.nan] * len(serials)  # send time of the last acked report
        self.acked_at = [math.nan] * len(serials)
        self.last_ok = [True] * len(serials)  # was the last sent report acknowledged
        self.gaps: list[tuple[str, float, float, float, bool]] = []
        """(serial, opened: send time, opened: ack time, closed: next send, opener acked)"""
        self.uncertain: set[str] = set()
        """Sensors with a report that failed: it may or may not have committed."""
        self.period = Period(now)
        self.offered = 0
        self.acked = 0

    def sending(self, serials: list[str], now: float) -> None:
        for serial in serials:
            i = self._index[serial]
            previous = self.sent[i]
            if not math.isnan(previous) and now - previous >= self.gap_min:
                self.gaps.append((serial, previous, self.acked_at[i], now, self.last_ok[i]))
            self.sent[i] = now
        self.period.offered += len(serials)
        self.offered += len(serials)

    def answered(
        self, serials: list[str], sent: float, now: float, failed: set[int], code: str | None
    ) -> None:
        """A batch's outcome: `failed` holds the indexes (in `serials`) not committed; `code`
        names the call's failure when the whole call failed."""
        if code is not None:
            self.period.errors[code] += len(serials)
            self.period.failed += len(serials)
            for serial in serials:
                self.last_ok[self._index[serial]] = False
            self.uncertain.update(serials)
            return
        for k, serial in enumerate(serials):
            i = self._index[serial]
            ok = k not in failed
            if not ok:
                self.uncertain.add(serial)
            if self.sent[i] == sent:
                self.last_ok[i] = ok
            if ok and not (self.acked_sent[i] >= sent):
                self.acked_sent[i] = sent
                self.acked_at[i] = now
        acked = len(serials) - len(failed)
        self.period.failed += len(failed)
        self.period.acked += acked
        self.acked += acked
        self.period.latencies.append(now - sent)

    def rotate(self, now: float, out: TextIO) -> None:
        """Write the period's line (JSON) and start the next."""
        out.write(json.dumps({"kind": "period", **self.period.as_json(now)}) + "\n")
        out.flush()
        self.period = Period(now)

    def final(self, now: float, out: TextIO) -> None:
        """Close every silence still open at `now`, then write the record: totals, gaps, and
        every sensor's last acknowledged report."""
        for i, serial in enumerate(self.serials):
            if not math.isnan(self.sent[i]) and now - self.sent[i] >= self.gap_min:
                self.gaps.append(
                    (serial, self.sent[i], self.acked_at[i], math.inf, self.last_ok[i])
                )
        last = {
            s: [self.acked_sent[i], self.acked_at[i]]
            for i, s in enumerate(self.serials)
            if not math.isnan(self.acked_sent[i])
        }
        record = {
            "kind": "final",
            "at": now,
            "offered": self.offered,
            "acked": self.acked,
            "gaps": [[s, a, _finite(b), _finite(c), ok] for s, a, b, c, ok in self.gaps],
            "last_acked": last,
            "uncertain": sorted(self.uncertain),
        }
        out.write(json.dumps(record) + "\n")
        out.flush()
