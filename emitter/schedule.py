"""Timetables: when each fleet sensor reports what, and how load mode paces its calls.

Pure: every method takes `now` (seconds on any monotonic clock) and draws from a
`random.Random`, so tests replay hours of fleet life in milliseconds.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .versions import fleet_initial, fleet_next, shown, upgrade_chance


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    """`interval` stretched or shrunk by up to `jitter` (a fraction), so heartbeats drift apart
    instead of arriving in waves."""
    return interval * rng.uniform(1 - jitter, 1 + jitter)


@dataclass(frozen=True)
class FleetShape:
    """How the simulated fleet behaves."""

    interval: float = 10.0  # seconds between heartbeats of one sensor
    jitter: float = 0.1  # ± fraction of the interval
    churn: float = 0.1  # share of the reporting sensors that is silent at any moment
    silence: float = 90.0  # mean seconds a silent spell lasts
    never: float = 0.05  # share of the sensors that never report
    upgrade_every: float = 600.0  # mean seconds of reporting between two upgrades of a sensor

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if not 0 <= self.churn < 1:
            raise ValueError("churn must be in [0, 1)")
        if self.churn and self.silence <= 0:
            raise ValueError("silence must be positive when churn is")
        if not 0 <= self.never <= 1:
            raise ValueError("never must be in [0, 1]")

    @property
    def mean_reporting(self) -> float:
        """Mean length of a reporting spell, chosen so silent spells take `churn` of the time."""
        if self.churn == 0:
            return math.inf
        return self.silence * (1 - self.churn) / self.churn


@dataclass
class _Sensor:
    serial: str
    version: str
    silent: bool
    spell_end: float  # when the current silent or reporting spell ends


class Fleet:
    """Which sensor sends which version when. Each reporting sensor alternates between
    reporting and silent spells of exponential length (so the silent share stays `churn` at
    any moment, including the first); the `never` share is left out entirely."""

    def __init__(
        self, serials: Sequence[str], shape: FleetShape, rng: random.Random, now: float
    ) -> None:
        self._shape = shape
        self._rng = rng
        self._chance = upgrade_chance(shape.interval, shape.upgrade_every)
        never = set(rng.sample(range(len(serials)), round(len(serials) * shape.never)))
        self.never_reporting = tuple(s for i, s in enumerate(serials) if i in never)
        self._sensors: list[_Sensor] = []
        self._due: list[tuple[float, int]] = []
        for serial in (s for i, s in enumerate(serials) if i not in never):
            silent = rng.random() < shape.churn
            sensor = _Sensor(serial, fleet_initial(rng), silent, now + self._spell(silent))
            first = sensor.spell_end if silent else now + rng.uniform(0, shape.interval)
            self._due.append((first, len(self._sensors)))
            self._sensors.append(sensor)
        heapq.heapify(self._due)

    def _spell(self, silent: bool) -> float:
        mean = self._shape.silence if silent else self._shape.mean_reporting
        return math.inf if math.isinf(mean) else self._rng.expovariate(1 / mean)

    def next_due(self) -> float:
        """When the next sensor is due (infinity when none ever will be)."""
        return self._due[0][0] if self._due else math.inf

    def pop_due(self, now: float) -> list[tuple[str, str]]:
        """The `(serial, version as sent)` reports due by `now`, at most one per sensor.

        A sensor's next heartbeat is timed from `now` when the caller is late (the daemon was
        down), so a backlog never turns into a burst of several reports per sensor.
        """
        reports = []
        while self._due and self._due[0][0] <= now:
            due, index = heapq.heappop(self._due)
            sensor = self._sensors[index]
            self._advance(sensor, due)
            if sensor.silent:
                heapq.heappush(self._due, (sensor.spell_end, index))
                continue
            sensor.version = fleet_next(sensor.version, self._chance, self._rng)
            reports.append((sensor.serial, shown(sensor.version)))
            step = jittered(self._shape.interval, self._shape.jitter, self._rng)
            heapq.heappush(self._due, (max(due, now) + step, index))
        return reports

    def _advance(self, sensor: _Sensor, now: float) -> None:
        while sensor.spell_end <= now:
            sensor.silent = not sensor.silent
            sensor.spell_end += self._spell(sensor.silent)

    def census(self, now: float) -> tuple[int, Counter[str]]:
        """How many reporting sensors are silent at `now`, and the versions of all of them."""
        silent = sum(1 for s in self._sensors if _silent_at(s, now))
        return silent, Counter(shown(s.version) for s in self._sensors)


def _silent_at(sensor: _Sensor, now: float) -> bool:
    # Spells are advanced lazily when a sensor is due, so a spell that ended since counts as
    # flipped; spells shorter than a heartbeat can be missed, which a census may ignore.
    return sensor.silent != (sensor.spell_end <= now)


@dataclass
class Pacer:
    """Hands out send times `period` apart. A caller that is late gets `now`, not the missed
    slot: no backlog builds up, so a daemon that cannot keep up shows as a lower achieved rate,
    never as a burst afterwards. `period` 0 means as fast as the callers go."""

    period: float
    next_at: float = -math.inf

    def reserve(self, now: float) -> float:
        at = max(self.next_at, now)
        self.next_at = at + self.period
        return at


def partition(serials: Sequence[str], gateways: int) -> list[list[str]]:
    """Each gateway's share of the fleet: sensor i belongs to gateway i mod `gateways`, so every
    share is within one sensor of the others and a gateway's sensors are spread over the
    fleet's id range (as sites are), not one contiguous block.

    Raises:
        ValueError: fewer than one gateway.
    """
    if gateways < 1:
        raise ValueError("gateways must be at least 1")
    return [list(serials[g::gateways]) for g in range(gateways)]


def chunks(reports: Sequence[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    """`reports` cut into batch calls of at most `size`, in order."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(reports[i : i + size]) for i in range(0, len(reports), size)]


def gateway_phase(index: int, gateways: int, flush: float) -> float:
    """When (seconds into each flush period) gateway `index` sends: spread evenly, so G
    gateways flushing every `flush` s make G calls per period at steady intervals, not one
    burst of G."""
    return flush * index / gateways
