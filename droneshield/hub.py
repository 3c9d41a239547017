"""Fan-out of sensor changes to subscribers (WebSocket clients), in process.

Publishers (the writer, the presence tracker) call `publish` synchronously; it never blocks and
never grows without bound: each subscription keeps only the latest state per sensor it watches,
up to `max_pending` sensors, and past that drops them and flags `overflowed` so its consumer
resynchronises from the database instead. A slow consumer therefore never slows the writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import trio

from .db.reports import Applied

Status = Literal["never", "online", "offline"]
MAX_PENDING_DEFAULT: Final = 10_000  # sensors held per subscription before it overflows


@dataclass(frozen=True, slots=True)
class SensorChange:
    """The state of one sensor after a change."""

    id: int
    serial: str
    version: str | None
    status: Status
    last_seen_at: datetime | None
    status_changed_at: datetime | None

    @classmethod
    def from_applied(cls, row: Applied) -> SensorChange:
        return cls(
            row.id, row.serial, row.version, "online", row.last_seen_at, row.status_changed_at
        )


class Subscription:
    """One subscriber's view: which sensors it watches and their latest unsent states."""

    def __init__(self, serials: Iterable[str] | None, max_pending: int) -> None:
        self.serials: frozenset[str] | None = None if serials is None else frozenset(serials)
        self._max_pending = max_pending
        self._pending: dict[int, SensorChange] = {}
        self._ready = trio.Event()
        self.overflowed = False

    def _offer(self, change: SensorChange) -> None:
        if self.overflowed:
            return
        self._pending[change.id] = change
        if len(self._pending) > self._max_pending:
            self._pending.clear()
            self.overflowed = True
        self._ready.set()

    async def wait(self) -> None:
        """Until there is something to take (a change, or an overflow)."""
        await self._ready.wait()

    def take(self) -> list[SensorChange]:
        """The latest state of every changed sensor since the last take; clears `overflowed`."""
        changes = list(self._pending.values())
        self._pending.clear()
        self.overflowed = False
        self._ready = trio.Event()
        return changes


class Hub:
    def __init__(self) -> None:
        self._by_serial: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()

    @property
    def subscribers(self) -> int:
        subs = set(self._everything)
        for group in self._by_serial.values():
            subs |= group
        return len(subs)

    def publish(self, changes: Iterable[SensorChange]) -> None:
        """Offer changes to the subscriptions that watch them. O(changes), never blocks."""
        by_serial = self._by_serial
        everything = self._everything
        for change in changes:
            for sub in everything:
                sub._offer(change)
            for sub in by_serial.get(change.serial, ()):
                sub._offer(change)

    def publish_applied(self, rows: Sequence[Applied]) -> None:
        """Writer sink: every committed report is a change (at least of last_seen_at)."""
        self.publish(SensorChange.from_applied(r) for r in rows)

    @contextmanager
    def subscribe(
        self, serials: Iterable[str] | None = None, *, max_pending: int = MAX_PENDING_DEFAULT
    ) -> Iterator[Subscription]:
        """Watch `serials` (None: every sensor) until the block exits."""
        sub = Subscription(serials, max_pending)
        self._attach(sub)
        try:
            yield sub
        finally:
            self._detach(sub)

    def resubscribe(self, sub: Subscription, serials: Iterable[str] | None) -> None:
        """Change what `sub` watches (the sensors on a client's screen changed)."""
        self._detach(sub)
        sub.serials = None if serials is None else frozenset(serials)
        self._attach(sub)

    def _attach(self, sub: Subscription) -> None:
        if sub.serials is None:
            self._everything.add(sub)
            return
        for serial in sub.serials:
            self._by_serial.setdefault(serial, set()).add(sub)

    def _detach(self, sub: Subscription) -> None:
        self._everything.discard(sub)
        for serial in sub.serials or ():
            group = self._by_serial.get(serial)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._by_serial[serial]
