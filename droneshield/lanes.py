"""Which writer lane commits a report: the first lane until it falls behind, then the others.

Pure code: the writer (writer.py) asks `place` for each report it hands over and tells
`taken` and `done` what its lanes took and finished, all on one trio thread.

Why not a fixed lane per sensor (a CRC-32 of the serial, until 2026-12-03): a lane that could
not commit (a row lock held by another transaction) then held every sensor hashed to it, and
once its channel was full the writer waited on it and every report stalled behind one lock.
Here a sensor is given a lane only while none of its reports is in one (waiting or
committing): the first lane with fewer than SPILL_AT waiting, else the one with the fewest. A
held lane holds what waits in it, and new sensors go on to the others. A sensor with a report
in flight stays in that lane, so its reports still commit in order, and two lanes still never
lock the same row (a lane's batch is answered, committed or not, before its sensors may move).
At light load the first lane takes everything, and more lanes commit side by side as reports
wait. In alternated runs against hashed lanes (README, Benchmarks) the batch and closed-loop
rates and the CPU per call were the same, and the paced tail differed within the runs' noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# Reports waiting in a lane (not yet in a batch) before new sensors go to the next lane. A
# commit costs a fixed ~2-3 ms (round trips, the WAL flush, the loop's hops) and ~35 us a row
# (the batch statement alone at ~28k rows/s on one connection): below ~100 rows the fixed part
# dominates, so another lane's commit would cost more than waiting for the next batch.
SPILL_AT: Final = 128


class LanePlacement:
    """Where each sensor's reports in flight are, and how many wait in each lane."""

    __slots__ = ("_held", "_spill_at", "waiting")

    def __init__(self, lanes: int, *, spill_at: int = SPILL_AT) -> None:
        """`spill_at`: reports waiting in a lane before new sensors go to another (the writer
        caps it at what a lane's channel holds).

        Raises:
            ValueError: `lanes` or `spill_at` is not positive.
        """
        if lanes < 1 or spill_at < 1:
            raise ValueError("lanes and spill_at must be positive")
        self._spill_at = spill_at
        # serial → (lane, reports of the sensor handed to that lane and not yet done)
        self._held: dict[str, tuple[int, int]] = {}
        self.waiting = [0] * lanes  # reports handed to each lane and not yet in a batch

    def __len__(self) -> int:
        """Sensors with reports in flight."""
        return len(self._held)

    def __contains__(self, serial: str) -> bool:
        """Whether a report of `serial` is in flight: its next one goes to the same lane."""
        return serial in self._held

    def place(self, serial: str) -> int:
        """The lane for a report of `serial`, counted as waiting there: the lane holding the
        sensor's earlier reports, else the first lane with fewer than `spill_at` waiting, else
        the one with the fewest."""
        held = self._held.get(serial)
        if held is not None:
            lane, count = held
            self._held[serial] = (lane, count + 1)
        else:
            lane = self._least_behind()
            self._held[serial] = (lane, 1)
        self.waiting[lane] += 1
        return lane

    def unplace(self, serial: str) -> None:
        """A report `place` placed that its lane never got (the lane stopped): as if it had
        been taken and done."""
        lane = self._held[serial][0]
        self.taken(lane, 1)
        self.done((serial,))

    def taken(self, lane: int, count: int) -> None:
        """`lane` took `count` waiting reports into a batch."""
        self.waiting[lane] -= count

    def done(self, serials: Iterable[str]) -> None:
        """A batch's reports are answered (committed or not): one per serial given, repeats
        included."""
        held = self._held
        for serial in serials:
            lane, count = held[serial]
            if count == 1:
                del held[serial]
            else:
                held[serial] = (lane, count - 1)

    def _least_behind(self) -> int:
        waiting = self.waiting
        for lane, count in enumerate(waiting):
            if count < self._spill_at:
                return lane
        return waiting.index(min(waiting))
