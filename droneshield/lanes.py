"""Which writer lane commits a report: the first lane until reports wait in it, then the others;
never a lane whose commit is held up, unless every lane's is.

Pure code: the writer (writer.py) asks `place` for each report it hands over and tells
`taken` and `finished` what its lanes took and answered, all on one trio thread; times are
trio's, passed in.

Why not a fixed lane per sensor (a CRC-32 of the serial, until 2026-12-03): a lane that could
not commit (a row lock held by another transaction) then held every sensor hashed to it, and
once its channel was full the writer waited on it and every report stalled behind one lock. Here
a sensor is given a lane only while none of its reports is in one (waiting or committing): the
first lane with fewer than SPILL_AT waiting whose commit has not run for HELD_AFTER, else the
one of those with the fewest waiting. A held lane keeps what it has (at most SPILL_AT reports of
new sensors come to it before it counts as held), and the rest go to the other lanes. A sensor
with a report in flight stays in that lane, so its reports still commit in order, and two lanes
never lock the same sensor row (a sensor's reports in a lane are answered, committed or not,
before it may move: all of a batch's, or those a lane held up by one sensor's row committed
apart, `answered`); such a sensor's next reports still wait for the held lane, unless it is the
sensor whose row holds the lane up (below). At light load the first lane takes everything, and
more lanes commit side by side as reports wait. In alternated runs against hashed lanes (README,
Benchmarks) the batch and closed-loop rates and the paced tail differed within the rounds'
spread.

Behind the regular lanes is one more, the side lane (`side_lane`, the last index), which
`_free_lane` never picks: a lane that found a sensor's row held by another transaction hands
that sensor's reports to it (`set_apart`) and commits the rest of its batch at once. The side
lane commits what it has in rounds, each a lock wait long per sensor still held: the reports of
those sensors wait for its next round (until their deadline), the others are committed. The
sensor's later reports follow in order: those placed in a regular lane are passed on when that
lane takes them (`apart`), and once none is in flight the next go to the side lane directly,
until the side lane has committed one of them (`freed`) or HELD_REMEMBER has passed. Before, the
held sensor's retries occupied the lane that found it, every report waiting in that lane waited
behind them, and each of its next reports held a lane for the lock wait again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

# Reports waiting in a lane (not yet in a batch) before new sensors go to the next lane.
# Derived, not tuned: a commit costs a fixed ~2-3 ms (round trips, the WAL flush, the loop's
# hops) and ~35-50 us a row (the batch statement alone at 19-28k rows/s on one connection),
# so below ~40-90 rows the fixed part dominates and another lane's commit would cost more
# than waiting for the next batch.
SPILL_AT: Final = 128
# Seconds a lane's commit may run before new sensors avoid it: a batch of 2,000 commits in
# 0.1-0.3 s on a loaded two-core machine; one held by a row lock waits until the reports'
# deadline. A lane taken for held too early only gets fewer new sensors for a while.
HELD_AFTER: Final = 0.5
# Seconds a sensor set apart stays in the side lane with no report of it committed there: an
# operator's transaction may hold its row for hours, and each report sent to a regular lane
# would hold that lane for the writer's lock wait again.
HELD_REMEMBER: Final = 60.0


class LanePlacement:
    """Where each sensor's reports in flight are, how many wait in each lane, and since when
    each lane's current commit runs."""

    __slots__ = ("_committing_since", "_held", "_spill_at", "apart", "side_lane", "waiting")

    def __init__(self, lanes: int, *, spill_at: int = SPILL_AT) -> None:
        """`lanes` regular lanes, and the side lane after them. `spill_at`: reports waiting in
        a lane before new sensors go to another (the writer caps it at what a lane's channel
        holds).

        Raises:
            ValueError: `lanes` or `spill_at` is not positive.
        """
        if lanes < 1 or spill_at < 1:
            raise ValueError("lanes and spill_at must be positive")
        self._spill_at = spill_at
        self.side_lane = lanes
        # serial → (lane, reports of the sensor handed to that lane and not yet answered)
        self._held: dict[str, tuple[int, int]] = {}
        self.waiting = [0] * (lanes + 1)  # reports handed to each lane and not yet in a batch
        self._committing_since: list[float | None] = [None] * (lanes + 1)
        # Sensors whose reports go through the side lane → until when a report placed with
        # none in flight goes there (then the entry goes).
        self.apart: dict[str, float] = {}

    def __contains__(self, serial: str) -> bool:
        """Whether a report of `serial` is in flight: its next one goes to the same lane."""
        return serial in self._held

    def in_flight(self) -> int:
        """Reports handed to the lanes and not yet answered."""
        return sum(count for _, count in self._held.values())

    def place(self, serial: str, now: float) -> int:
        """The lane for a report of `serial`, counted as waiting there: the lane holding the
        sensor's earlier reports, else (`_free_lane`) one with room whose commit is not held."""
        held = self._held.get(serial)
        if held is not None:
            lane, count = held
            self._held[serial] = (lane, count + 1)
        else:
            lane = self._free_lane(now)
            if self.apart and serial in self.apart:
                if self.apart[serial] > now:
                    lane = self.side_lane
                else:
                    del self.apart[serial]
            self._held[serial] = (lane, 1)
        self.waiting[lane] += 1
        return lane

    def set_apart(self, serial: str, now: float) -> None:
        """A regular lane found `serial`'s row held (by another transaction): its reports go
        through the side lane from now on (`apart`), its next ones for HELD_REMEMBER."""
        self.apart[serial] = now + HELD_REMEMBER

    def passed_on(self, reports: int) -> None:
        """A regular lane handed `reports` of sensors set apart, from a batch it took, to the
        side lane (still in flight, now waiting there)."""
        self.waiting[self.side_lane] += reports

    def freed(self, serials: Iterable[str]) -> None:
        """The side lane committed reports of these sensors: their rows are free again, so
        the next report placed with none in flight goes to a regular lane."""
        apart = self.apart
        for serial in serials:
            if serial in apart:
                apart[serial] = -math.inf

    def unplace(self, serial: str) -> None:
        """A report `place` placed that its lane never got: as if never placed."""
        lane = self._held[serial][0]
        self.waiting[lane] -= 1
        self._release(serial)

    def taken(self, lane: int, count: int, now: float) -> None:
        """`lane` took `count` waiting reports into a batch and starts committing it."""
        self.waiting[lane] -= count
        self._committing_since[lane] = now
        if self.apart:
            # Sensors whose time apart is over and that have nothing in flight: forgotten, so
            # that a sensor gone silent is not looked for in every batch from then on.
            over = [s for s, until in self.apart.items() if until <= now and s not in self._held]
            for serial in over:
                del self.apart[serial]

    def finished(self, lane: int, serials: Iterable[str]) -> None:
        """`lane` answered a batch (committed or not) of these reports, repeats included, or
        reports it held when it stopped, but for those already `answered` or handed to the side
        lane (`passed_on`); it commits nothing now."""
        self._committing_since[lane] = None
        self.answered(serials)

    def answered(self, serials: Iterable[str]) -> None:
        """Reports of a batch still committing were answered (its lane set a held sensor apart
        and committed the others): their sensors may move."""
        for serial in serials:
            self._release(serial)

    def _release(self, serial: str) -> None:
        lane, count = self._held[serial]
        if count == 1:
            del self._held[serial]
        else:
            self._held[serial] = (lane, count - 1)

    def _free_lane(self, now: float) -> int:
        """The first lane not held with fewer than `spill_at` waiting, else the lane not held
        with the fewest waiting; every lane held, the one with the fewest waiting."""
        waiting = self.waiting
        held_since = now - HELD_AFTER
        fewest = None
        committing = self._committing_since
        for lane in range(self.side_lane):
            since = committing[lane]
            if since is not None and since <= held_since:
                continue
            if waiting[lane] < self._spill_at:
                return lane
            if fewest is None or waiting[lane] < waiting[fewest]:
                fewest = lane
        if fewest is None:
            regular = waiting[: self.side_lane]
            return regular.index(min(regular))
        return fewest
