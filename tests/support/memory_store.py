"""An in-memory implementation of the presence queries, whose database clock is trio's.

The tracker's timing is tested on MockClock, where a real database cannot follow (its `now()`
does not jump with the mock clock, and real socket I/O under an autojumping clock sees
timeouts that never happened). This store keeps the same contract as
`droneshield.db.presence` (the real one is tested on PostgreSQL in test_presence_db.py) and
records what it was asked, so tests can count statements and read transition times.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

from droneshield.db.presence import Expiry
from droneshield.domain import Applied, SensorState

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def at(t: float) -> datetime:
    return EPOCH + timedelta(seconds=t)


@dataclass
class Row:
    id: int
    online: bool = False
    last_seen: float | None = None  # trio time; None: never reported
    changed: float | None = None


class MemoryPresenceStore:
    def __init__(self, count: int) -> None:
        self.rows = {i: Row(i) for i in range(1, count + 1)}
        self.events: list[tuple[int, str, float]] = []  # (sensor id, kind, time)
        self.expire_calls: list[list[int]] = []
        self.prune_calls = 0
        self.failures_left = 0  # the next expire calls raise OSError, as a lost connection
        self.lost_replies = 0  # the next expire calls commit, then raise (the reply lost)
        self.expire_delay = 0.0  # seconds each expire statement takes (a loaded database)
        self.held: set[int] = set()  # rows another transaction holds: expire skips them

    def report(self, ids: Iterable[int]) -> list[Applied]:
        """Commit one report per id now (as the writer would) and return the rows."""
        now = trio.current_time()
        applied = []
        for i in ids:
            row = self.rows[i]
            was_online, was_never = row.online, row.last_seen is None
            row.online, row.last_seen = True, now
            if not was_online:
                row.changed = now
                self.events.append((i, "online", now))
            applied.append(
                Applied(i, f"DS-{i:08d}", None, at(now), at(row.changed or now), was_online,
                        was_never, None, None, False)
            )  # fmt: skip
        return applied

    def set_online(self, i: int, last_seen: float) -> None:
        """A row as another instance (or an earlier run) left it."""
        self.rows[i].online, self.rows[i].last_seen = True, last_seen

    async def expire(self, ids: Sequence[int], offline_after: float) -> Expiry:
        await trio.sleep(self.expire_delay)
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("connection lost")
        self.expire_calls.append(list(ids))
        now = trio.current_time()
        expiry = Expiry()
        for i in sorted(ids):
            row = self.rows[i]
            if not row.online:
                continue
            if i in self.held:
                expiry.held.append(i)
                continue
            assert row.last_seen is not None
            if row.last_seen <= now - offline_after:
                row.online, row.changed = False, now
                self.events.append((i, "offline", now))
                expiry.offline.append(
                    SensorState(i, f"DS-{i:08d}", None, "offline", at(row.last_seen), at(now))
                )
            else:
                expiry.still_online.append((i, now - row.last_seen))
        if self.lost_replies:
            self.lost_replies -= 1
            raise OSError("connection lost after commit")
        return expiry

    async def offline_states(self, ids: Sequence[int]) -> list[SensorState]:
        await trio.lowlevel.checkpoint()
        return [
            SensorState(i, f"DS-{i:08d}", None, "offline", at(r.last_seen), at(r.changed or 0))
            for i in sorted(ids)
            if not (r := self.rows[i]).online and r.last_seen is not None
        ]

    async def online_page(self, after: int, limit: int) -> list[tuple[int, float]]:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        online = [r for i, r in sorted(self.rows.items()) if i > after and r.online]
        return [(r.id, now - r.last_seen) for r in online[:limit] if r.last_seen is not None]

    async def stale_page(self, after: int, limit: int, silent_for: float) -> list[int]:
        await trio.lowlevel.checkpoint()
        cutoff = trio.current_time() - silent_for
        return [
            i
            for i, r in sorted(self.rows.items())
            if i > after and r.online and r.last_seen is not None and r.last_seen <= cutoff
        ][:limit]

    async def prune_events(self, older_than: float, limit: int) -> int:
        await trio.lowlevel.checkpoint()
        self.prune_calls += 1
        cutoff = trio.current_time() - older_than
        old = [e for e in self.events if e[2] < cutoff][:limit]
        for e in old:
            self.events.remove(e)
        return len(old)

    def offline_times(self, i: int) -> list[float]:
        return [t for sensor, kind, t in self.events if sensor == i and kind == "offline"]
