"""Which writer lane commits a report: the first lane until reports wait in it, then the others;
never a lane whose commit is held up, unless every lane's is.

Pure code: the writer (writer.py) asks `place` for each report it hands over and tells
`taken` and `finished` what its lanes took and answered, all on one trio thread; times are
trio's, passed in.

Why not a fixed lane per sensor (a CRC-32 of the serial, until 2026-12-03): a lane that could
not commit (a row lock held by another transaction) then held every sensor hashed to it, and
once its channel was full the writer waited on it and every report stalled behind one lock.
Here a sensor is given a lane only while none of its reports is in one (waiting or
committing): the first lane with fewer than SPILL_AT waiting whose commit has not run for
HELD_AFTER, else the one of those with the fewest waiting. A held lane keeps what it has (at
most SPILL_AT reports of new sensors come to it before it counts as held), and the rest go to
the other lanes. A sensor with a report in flight stays in that lane, so its reports still
commit in order, and two lanes never lock the same sensor row (a sensor's reports in a lane
are answered, committed or not, before it may move: all of a batch's, or those a lane held up
by one sensor's row committed apart, `answered`); such a sensor's next reports still wait
for the held lane. At light load the first lane takes everything, and more lanes commit side by
side as reports wait. In alternated runs against hashed lanes (README, Benchmarks) the batch
and closed-loop rates and the paced tail differed within the rounds' spread.
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


class LanePlacement:
    """Where each sensor's reports in flight are, how many wait in each lane, and since when
    each lane's current commit runs."""

    __slots__ = ("_committing_since", "_held", "_spill_at", "waiting")

    def __init__(self, lanes: int, *, spill_at: int = SPILL_AT) -> None:
        """`spill_at`: reports waiting in a lane before new sensors go to another (the writer
        caps it at what a lane's channel holds).

        Raises:
            ValueError: `lanes` or `spill_at` is not positive.
        """
        if lanes < 1 or spill_at < 1:
            raise ValueError("lanes and spill_at must be positive")
        self._spill_at = spill_at
        # serial → (lane, reports of the sensor handed to that lane and not yet answered)
        self._held: dict[str, tuple[int, int]] = {}
        self.waiting = [0] * lanes  # reports handed to each lane and not yet in a batch
        self._committing_since: list[float | None] = [None] * lanes

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
            self._held[serial] = (lane, 1)
        self.waiting[lane] += 1
        return lane

    def unplace(self, serial: str) -> None:
        """A report `place` placed that its lane never got: as if never placed."""
        lane = self._held[serial][0]
        self.waiting[lane] -= 1
        self._release(serial)

    def taken(self, lane: int, count: int, now: float) -> None:
        """`lane` took `count` waiting reports into a batch and starts committing it."""
        self.waiting[lane] -= count
        self._committing_since[lane] = now

    def finished(self, lane: int, serials: Iterable[str]) -> None:
        """`lane` answered a batch (committed or not) of these reports, repeats included, or
        reports it held when it stopped, but for those already `answered`; it commits nothing
        now."""
        self._committing_since[lane] = None
        self.answered(serials)

    def stalled(self, lane: int) -> None:
        """`lane`'s commit waits for a row another transaction holds: new sensors avoid it now,
        not only once it has committed for HELD_AFTER."""
        self._committing_since[lane] = -math.inf

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
        for lane, since in enumerate(self._committing_since):
            if since is not None and since <= held_since:
                continue
            if waiting[lane] < self._spill_at:
                return lane
            if fewest is None or waiting[lane] < waiting[fewest]:
                fewest = lane
        return waiting.index(min(waiting)) if fewest is None else fewest
