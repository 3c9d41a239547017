"""Fan-out of sensor changes and fleet totals to subscribers (WebSocket clients), in process.

Publishers (the writer, the presence tracker) call `publish` synchronously; it never blocks and
never grows without bound: each subscription keeps only the latest state per sensor it watches,
up to `max_pending` sensors, and past that drops them and flags `overflowed` so its consumer
resynchronises from the database instead. A slow consumer therefore never slows the writer.

Changes published here are also collected by outboxes (the relay forwards them to the other
daemons); changes that came from another daemon enter through `publish_remote`, which skips the
outboxes so nothing is echoed back.

The hub also remembers, per sensor, the version it last reported when that one was never
uploaded (a stored version is only ever an uploaded one, so the database cannot say): listings
and a sensor's page show it, marked as not stored, while this daemon knows it. Up to
REPORTED_MAX sensors (past it the oldest tenth is forgotten); a sensor reporting a stored
version, or retired, is forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Final, Generic, TypeVar

import trio

from .domain import SensorState

Match = Callable[[SensorState], bool]
MAX_PENDING_DEFAULT: Final = 10_000  # sensors held per subscription before it overflows
REPORTED_MAX: Final = 200_000  # sensors whose unstored reported version is remembered (~30 MB)

T = TypeVar("T")


class Subscription:
    """One subscriber's view: which sensors it watches and their latest unsent states.

    `serials` None watches every sensor, narrowed by `match` when given (a filter such as
    "status is offline"). With both, it watches `serials` and also every sensor `match`
    accepts (a page on screen, and the sensors that enter its filter).
    """

    def __init__(
        self, serials: Iterable[str] | None, max_pending: int, match: Match | None = None
    ) -> None:
        self.serials: frozenset[str] | None = None if serials is None else frozenset(serials)
        self.match = match
        self._max_pending = max_pending
        self._pending: dict[int, SensorState] = {}
        self._ready = trio.Event()
        self.overflowed = False

    @property
    def pending(self) -> int:
        """Sensors waiting to be taken (never more than `max_pending`)."""
        return len(self._pending)

    def offer(self, change: SensorState) -> None:
        """Hold `change` as the sensor's latest state (an outbox filled by its owner)."""
        self._offer(change)

    def _offer(self, change: SensorState) -> None:
        if self.overflowed:
            return
        self._pending[change.id] = change
        if len(self._pending) > self._max_pending:
            self._overflow()
        self._ready.set()

    def _overflow(self) -> None:
        self._pending.clear()
        self.overflowed = True
        self._ready.set()

    async def wait(self) -> None:
        """Until there is something to take (a change, or an overflow)."""
        await self._ready.wait()

    def take(self) -> list[SensorState]:
        """The latest state of every changed sensor since the last take; clears `overflowed`."""
        changes = list(self._pending.values())
        self._pending.clear()
        self.overflowed = False
        self._ready = trio.Event()
        return changes


class Latest(Generic[T]):
    """A value many tasks follow, each seeing only its newest version (never a backlog).

    The producer (the fleet totals ticker) checks `watched` so it works only while someone
    follows.
    """

    def __init__(self) -> None:
        self.value: T | None = None
        self.version = 0
        self._changed = trio.Event()
        self._watchers = 0
        self._watched = trio.Event()

    @property
    def watchers(self) -> int:
        return self._watchers

    def set(self, value: T) -> None:
        """Publish `value` if it differs from the current one. Never blocks."""
        if value == self.value:
            return
        self.value = value
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_newer(self, seen: int) -> tuple[int, T]:
        """The newest (version, value) once its version is above `seen`."""
        while self.version <= seen or self.value is None:
            await self._changed.wait()
        return self.version, self.value

    async def wait_watched(self) -> None:
        """Until at least one task follows the value."""
        await self._watched.wait()

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Count the caller as a follower for the duration of the block."""
        self._watchers += 1
        self._watched.set()
        try:
            yield
        finally:
            self._watchers -= 1
            if not self._watchers:
                self._watched = trio.Event()


def _forget_oldest(reported: dict[int, str]) -> dict[int, str]:
    """`reported` without its oldest tenth (at least one), as a new dict. Deleting a dict's
    first key one at a time leaves the deleted slots in front, and every later search for the
    first key walks them again: 20,000 such evictions from 200,000 sensors took 0.5 s, and the
    cost grows with each. Rebuilding once per tenth costs O(1) a sensor."""
    return dict(islice(reported.items(), max(1, len(reported) // 10), None))


class Hub:
    def __init__(self) -> None:
        self._by_serial: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()  # whose filter looks at every change
        # Those of them with no serials: they take heartbeats of any sensor (a page's filter
        # with serials admits only transitions of others: `interest`).
        self._unlisted: set[Subscription] = set()
        self._outboxes: set[Subscription] = set()
        self._subscriptions: set[Subscription] = set()
        self._taps: list[Callable[[SensorState], None]] = []  # see `tap`
        # Bumped whenever what the subscriptions watch may have changed (see `interest`).
        self.interest_version = 0
        # Fleet totals (the `summary` message), kept current by `summary.serve_summary`.
        self.summary: Latest[dict[str, object]] = Latest()
        self._reported: dict[int, str] = {}  # sensor id → unstored version it reports
        self._versions: dict[str, str] = {}  # one string per version, however many report it

    def reported_version(self, sensor_id: int) -> str | None:
        """The version the sensor last reported when that one was never uploaded (canonical),
        as far as this daemon's changes tell; None when it reports a stored one, or unknown."""
        return self._reported.get(sensor_id)

    def reported_changes(self, sensor_id: int, unstored: str | None) -> bool:
        """Whether a report of `unstored` (the version it reported when never uploaded, else
        None) changes what the hub remembers of the sensor: a heartbeat nobody watches is
        published for that alone."""
        return self._reported.get(sensor_id) != unstored

    def _remember(self, change: SensorState) -> None:
        reported = self._reported
        version = change.reported_version
        if version is not None:
            if reported.get(change.id) == version:
                return
            reported.pop(change.id, None)
            if len(reported) >= REPORTED_MAX:
                reported = self._reported = _forget_oldest(reported)
            if len(self._versions) >= REPORTED_MAX:
                self._versions.clear()
            reported[change.id] = self._versions.setdefault(version, version)
        elif change.retired or (change.status == "online" and change.edit is None):
            # A report of a stored (or malformed) version. Expiries and operators' edits say
            # nothing of versions.
            reported.pop(change.id, None)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    @property
    def backlog(self) -> int:
        """Changed sensors waiting in subscriptions (bounded by their `max_pending`)."""
        return sum(sub.pending for sub in self._subscriptions)

    def wants(self, serial: str) -> bool:
        """Whether any subscription may want a change of `serial` (cheap pre-filter for the
        relay, which decodes only what someone here watches)."""
        return bool(self._everything) or serial in self._by_serial

    def wants_heartbeat(self, serial: str) -> bool:
        """Whether any subscription may want a heartbeat of `serial` (a report that changed
        neither status nor version): one watching it, or one watching every sensor. A page
        with a filter watches its serials; the filter takes only transitions of the others,
        so while such pages alone are open no change is built for other heartbeats."""
        return bool(self._unlisted) or serial in self._by_serial

    def interest(self) -> tuple[bool, Collection[str]]:
        """(whether some subscription watches every sensor, the serials watched one by one):
        what the relay announces to the other daemons. The collection is live; copy it.

        A subscription with serials and a filter counts by its serials: its filter admits
        transitions only (`web/messages.py`), and transitions are always relayed. One with a
        filter and no serials takes heartbeats of any sensor its filter admits: everything."""
        return bool(self._unlisted), self._by_serial.keys()

    def publish(self, changes: Iterable[SensorState]) -> None:
        """Offer changes made by this daemon to subscriptions and to the outboxes whose
        `match` accepts them. Never blocks."""
        outboxes = self._outboxes
        for change in self._deliver(changes):
            for box in outboxes:
                if box.match is None or box.match(change):
                    box._offer(change)

    def publish_remote(self, changes: Iterable[SensorState]) -> None:
        """Offer changes another daemon made (they are not forwarded again). Never blocks."""
        for _ in self._deliver(changes):
            pass

    def _deliver(self, changes: Iterable[SensorState]) -> Iterator[SensorState]:
        by_serial = self._by_serial
        everything = self._everything
        reported = self._reported
        taps = self._taps
        for change in changes:
            for tap in taps:
                tap(change)
            if change.reported_version is not None or (reported and change.id in reported):
                self._remember(change)
            for sub in everything:
                if sub.match is None or sub.match(change):
                    sub._offer(change)
            for sub in by_serial.get(change.serial, ()):
                sub._offer(change)
            yield change

    def resync_all(self) -> None:
        """Changes were lost on the way here (a relay gap): every subscriber must reload."""
        for sub in self._subscriptions:
            sub._overflow()

    @contextmanager
    def subscribe(
        self,
        serials: Iterable[str] | None = None,
        *,
        max_pending: int = MAX_PENDING_DEFAULT,
        match: Match | None = None,
    ) -> Iterator[Subscription]:
        """Watch `serials` and every sensor `match` accepts (serials None and no match: every
        sensor) until the block exits."""
        sub = Subscription(serials, max_pending, match)
        self._subscriptions.add(sub)
        self._attach(sub)
        try:
            yield sub
        finally:
            self._detach(sub)
            self._subscriptions.discard(sub)

    def resubscribe(
        self, sub: Subscription, serials: Iterable[str] | None, *, match: Match | None = None
    ) -> None:
        """Change what `sub` watches (the sensors on a client's screen changed). Changes still
        pending for sensors it no longer watches are dropped."""
        self._detach(sub)
        sub.serials = None if serials is None else frozenset(serials)
        sub.match = match
        if sub.serials is not None:
            for key, change in list(sub._pending.items()):
                if change.serial not in sub.serials and not (match and match(change)):
                    del sub._pending[key]
        self._attach(sub)

    @contextmanager
    def tap(self, on_change: Callable[[SensorState], None]) -> Iterator[None]:
        """Call `on_change` with every change, this daemon's and relayed ones, until the block
        exits; it must not block. Unlike a subscription it says nothing of interest to peers
        (`interest`) and keeps nothing."""
        self._taps.append(on_change)
        try:
            yield
        finally:
            self._taps.remove(on_change)

    @contextmanager
    def outbox(
        self, *, max_pending: int = MAX_PENDING_DEFAULT, match: Match | None = None
    ) -> Iterator[Subscription]:
        """Collect the changes this daemon publishes (not remote ones) that `match` accepts
        (all when None) until the block exits."""
        box = Subscription(None, max_pending, match)
        self._outboxes.add(box)
        try:
            yield box
        finally:
            self._outboxes.discard(box)

    def _attach(self, sub: Subscription) -> None:
        self.interest_version += 1
        if sub.serials is None or sub.match is not None:
            self._everything.add(sub)
        if sub.serials is None:
            self._unlisted.add(sub)
        for serial in sub.serials or ():
            self._by_serial.setdefault(serial, set()).add(sub)

    def _detach(self, sub: Subscription) -> None:
        self.interest_version += 1
        self._everything.discard(sub)
        self._unlisted.discard(sub)
        for serial in sub.serials or ():
            group = self._by_serial.get(serial)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._by_serial[serial]
