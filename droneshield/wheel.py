"""A hashed timing wheel: one deadline per key, for a million keys, in plain Python.

Pure code: no I/O and no clock of its own; every call that needs the time takes `now`, so the
presence tracker drives it with `trio.current_time()` and tests drive it with any numbers.

Layout, chosen for memory (~85 bytes per tracked key at a million, see tests/bench/bench_wheel.py)
and for the cost of a re-arm (one dict store):

- `_deadlines` maps each key to its deadline *tick* (the deadline rounded up to the resolution).
  Keys armed together share one tick object, so the value costs a pointer.
- A ring of `_size` slot lists covers the ticks `_next … _next + _size - 1`; each key sits in
  exactly one slot, at or before its deadline tick ("filed"). A re-arm only moves the deadline in
  the dict; when the key's slot comes round, a key whose deadline has moved on is filed again, at
  its new deadline. So a key costs one list pointer however often it is re-armed, and each key is
  looked at about once per `span`, not once per re-arm.
- A deadline beyond the ring is filed in its last slot and moves on when that slot comes round.
- Cancel leaves the key filed and stores its tick negated (a tombstone) until its slot comes round,
  so cancel-then-arm does not file the key twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final

# Ticks count from this many steps before time 0, so every deadline that can occur is a
# non-negative tick and a cancelled key can be told apart by storing its tick as ~tick (< 0).
_TICK_BIAS: Final = 1 << 40


class TimingWheel:
    """Deadlines per key, expired in deadline order with at most one `resolution` of delay.

    A key armed with deadline `d` is returned by the first `expired(now)` call where `d` is at or
    before the last tick boundary at or before `now` (`d <= floor(now / resolution) *
    resolution`): never before its deadline, and, when `expired` is called at each tick boundary,
    less than one `resolution` after it. A deadline only moves later: arming a key that already
    has a later deadline keeps the later one (a sensor's newest report wins).

    Arm, re-arm and cancel are O(1); `expired` is O(keys it looks at), each key being looked at
    about once per `span` plus once when it expires.
    """

    __slots__ = ("_deadlines", "_late", "_live", "_next", "_size", "_slots", "resolution")

    def __init__(self, resolution: float, span: float, now: float) -> None:
        """`span`: the longest delay usually armed (longer ones cost an extra visit per span).

        Raises:
            ValueError: `resolution` or `span` is not positive.
        """
        if not resolution > 0 or not span > 0:
            raise ValueError("resolution and span must be positive")
        self.resolution = resolution
        self._size = math.ceil(span / resolution) + 1
        self._slots: list[list[int]] = [[] for _ in range(self._size)]
        self._late: list[int] = []  # keys armed with a deadline whose tick was already processed
        self._deadlines: dict[int, int] = {}
        self._next = self._tick_at(now)  # the first tick not processed yet
        self._live = 0

    def __len__(self) -> int:
        """Keys armed and neither expired nor cancelled."""
        return self._live

    def __contains__(self, key: int) -> bool:
        tick = self._deadlines.get(key)
        return tick is not None and tick >= 0

    def arm(self, key: int, deadline: float) -> None:
        """Track `key` until `deadline`, unless it already has a later one. O(1)."""
        self.arm_many((key,), deadline)

    def arm_many(self, keys: Iterable[int], deadline: float) -> None:
        """`arm` each key with the same deadline: the writer's sink re-arms a committed batch."""
        tick = self._tick_of(deadline)
        deadlines = self._deadlines
        slot = self._slot_for(tick)
        added = 0
        for key in keys:
            old = deadlines.get(key)
            if old is None:
                deadlines[key] = tick
                slot.append(key)
                added += 1
            elif old < 0:  # cancelled, still filed at or before its old tick
                deadlines[key] = tick
                added += 1
                if tick < ~old:
                    slot.append(key)
            elif tick > old:
                deadlines[key] = tick
        self._live += added

    def cancel(self, key: int) -> None:
        """Stop tracking `key` (nothing happens if it is not tracked). O(1)."""
        tick = self._deadlines.get(key)
        if tick is not None and tick >= 0:
            self._deadlines[key] = ~tick
            self._live -= 1

    def next_tick_at(self) -> float:
        """The time at which the next unprocessed tick begins: when `expired` next has work."""
        tick = self._next - _TICK_BIAS
        at = tick * self.resolution
        while math.floor(at / self.resolution) < tick:  # float rounding, at most a few ulps
            at = math.nextafter(at, math.inf)
        return at

    def expired(self, now: float) -> Iterator[list[int]]:
        """Take out the keys due at `now`, one list per tick, earliest first.

        Keys already overdue when armed come first, ordered by deadline. Keys may be armed or
        cancelled between lists (one armed overdue meanwhile may come after later deadlines, or
        in the next call). A list once yielded is no longer tracked, so a caller that stops early
        (or fails to act on a list) must re-arm what it did not handle; ticks not reached yet
        stay in the wheel.
        """
        limit = self._tick_at(now)
        if limit - self._next >= self._size:
            # Not polled for a whole revolution: every slot may hold due keys from several ticks.
            for slot in self._slots:
                self._late.extend(slot)
                slot.clear()
            self._next = limit + 1
        if self._late:
            late, self._late = self._late, []
            deadlines = self._deadlines
            late.sort(key=lambda key: deadlines.get(key, -1))
            due = self._sift(late, self._next - 1)
            if due:
                yield due
        while self._next <= limit:
            tick = self._next
            index = tick % self._size
            entries = self._slots[index]
            self._next = tick + 1
            if not entries:
                continue
            self._slots[index] = []
            due = self._sift(entries, tick)
            if due:
                yield due

    def _sift(self, entries: list[int], tick: int) -> list[int]:
        """Entries due by `tick` are removed and returned; the others are filed again."""
        deadlines = self._deadlines
        due = []
        for key in entries:
            deadline = deadlines.get(key)
            if deadline is None:  # a stale duplicate: the key expired or was cancelled already
                continue
            if deadline < 0:
                del deadlines[key]
            elif deadline <= tick:
                del deadlines[key]
                due.append(key)
            else:
                self._slot_for(deadline).append(key)
        self._live -= len(due)
        return due

    def _slot_for(self, tick: int) -> list[int]:
        if tick < self._next:
            return self._late
        return self._slots[min(tick, self._next + self._size - 1) % self._size]

    def _tick_of(self, deadline: float) -> int:
        """The first tick at or after `deadline`."""
        return max(math.ceil(deadline / self.resolution) + _TICK_BIAS, 0)

    def _tick_at(self, now: float) -> int:
        """The last tick at or before `now`."""
        return max(math.floor(now / self.resolution) + _TICK_BIAS, 0)
