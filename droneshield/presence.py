"""Presence: deciding on the backend when a silent sensor goes offline.

A `TimingWheel` on `trio.current_time()` holds one deadline per online sensor. The writer's sink
re-arms it for every committed report; once a tick, the due sensors are handed in batches to one
conditional update (`db.presence.expire`) that marks offline only those still online and silent
for `offline_after` by the database's clock, records an 'offline' event for each, and the
changes go to the hub.

Clocks: `last_seen_at` is the database's `now()` when the report's transaction began; the wheel's
deadline is trio's time when the writer learnt of the commit plus `offline_after`, so it is never
earlier than the database's own deadline (clock skew between the hosts does not matter: only
durations cross between the clocks). The database decides with `now() - offline_after`, so a
sensor never goes offline before `offline_after`, and it goes offline at most one `resolution`
(plus the commit's and the expiry's latency) after it. A sensor the update leaves online
because its report is newer is dropped from the wheel, since whoever committed that report tracks
it: this instance's sink re-armed it already, or another instance did (if that instance dies, the
safety sweep catches it). Only when the database says the sensor is due within one `resolution`
(the clocks ran at slightly different rates) is it re-armed here.

A database outage longer than OUTAGE_MIN holds expiry (the wheel's and the sweep's) until
`offline_after` after the last failed statement: while the database was away, the writer could
commit no report, so every sensor's `last_seen_at` aged; expiring at once when it comes back
marked offline the sensors that had kept reporting (a fleet-wide flap, with its events,
webhooks and live changes). Held, each sensor has `offline_after` to get a report through; one
that does not goes offline then, at most an outage plus `offline_after` late.

Start-up recovery rebuilds the wheel from the online sensors, a page at a time, after the daemon
is ready (it never delays /readyz), while expiry runs; those overdue go offline at the next
tick. A periodic safety sweep marks offline what no instance tracks, and
old `sensor_event` rows are pruned in small batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Final, NoReturn, Protocol

import trio

from . import metrics
from .config import Settings
from .db.pool import is_outage, is_transient
from .db.presence import Expiry
from .domain import Applied, SensorState
from .hub import Hub
from .periodic import every
from .wheel import TimingWheel

log = logging.getLogger(__name__)

EXPIRE_BATCH: Final = 5_000  # sensor ids per expiry statement
RECOVERY_PAGE: Final = 10_000  # online sensors read per query at start-up
SWEEP_PAGE: Final = 5_000  # stale sensor ids read per sweep query
PRUNE_BATCH: Final = 1_000  # sensor_event rows deleted per statement
PRUNE_INTERVAL: Final = 3600.0  # seconds between pruning runs
FAILURE_PAUSE: Final = 1.0  # seconds to wait after a database error before trying again
SWEEP_GRACE: Final = 2.0  # seconds a live wheel's expiry may lag before the sweep steps in
OUTAGE_MIN: Final = 5.0  # seconds of failing statements that make an outage, not a blip


class PresenceStore(Protocol):
    """The queries the tracker needs (`db.presence.PresenceDb` is the real one)."""

    async def expire(self, ids: Sequence[int], offline_after: float) -> Expiry: ...

    async def online_page(self, after: int, limit: int) -> list[tuple[int, float]]: ...

    async def stale_page(self, after: int, limit: int, silent_for: float) -> list[int]: ...

    async def prune_events(self, older_than: float, limit: int) -> int: ...

    async def offline_states(self, ids: Sequence[int]) -> list[SensorState]: ...


class Tracker:
    """The wheel and what acts on it. Built by `serve_presence`, which runs its loops."""

    def __init__(
        self,
        store: PresenceStore,
        hub: Hub,
        *,
        offline_after: float,
        resolution: float,
        sweep_interval: float,
        event_retention: float,
    ) -> None:
        self._store = store
        self._hub = hub
        self.offline_after = offline_after
        self.sweep_interval = sweep_interval
        self.event_retention = event_retention
        self.wheel = TimingWheel(resolution, offline_after, trio.current_time())
        self.statements = 0  # expiry statements run (the wheel's and the sweep's), for tests
        self.recovered = trio.Event()  # set once start-up recovery has armed every online sensor
        self._failing_since: float | None = None  # first of the statements failing in a row
        # Ids of an expiry statement that failed: it may have committed (its reply lost), and
        # the retry, finding them offline, would say nothing of them.
        self._unsure: set[int] = set()
        self.held_until = -math.inf  # no sensor goes offline before (after an outage)

    def track(self, rows: Sequence[Applied]) -> None:
        """Writer sink: each committed report re-arms its sensor. O(rows), never blocks."""
        self.wheel.arm_many((r.id for r in rows), trio.current_time() + self.offline_after)

    async def recover(self, *, page: int = RECOVERY_PAGE) -> int:
        """Arm every online sensor at the deadline its last report implies, reading `page`
        sensors per query so a million rows never sit in memory at once. Returns how many."""
        after, count = 0, 0
        while rows := await self._store.online_page(after, page):
            self._arm_aged(rows)
            after = rows[-1][0]
            count += len(rows)
        log.info("presence recovered %d online sensors", count)
        return count

    async def expire_due(self) -> None:
        """Expire what is due now (all ticks up to now together), in batches of at most
        `EXPIRE_BATCH` ids per statement.

        Raises:
            Whatever the store raises; the ids of the failed batch (and of the rest of its
            tick) are re-armed first, due at once, so a later call tries them again.
        """
        # Every tick due by now in one go: a statement that takes longer than a resolution (a
        # loaded database) must not leave one tick per statement behind, or the lag grows
        # without bound (the soak saw offline decided a minute late at 100k sensors).
        now = trio.current_time()
        ids = [key for tick in self.wheel.expired(now) for key in tick]
        if now < self.held_until:
            self.wheel.arm_many(ids, self.held_until)
            return
        for start in range(0, len(ids), EXPIRE_BATCH):
            try:
                await self.expire(ids[start : start + EXPIRE_BATCH])
            except Exception as exc:
                self._unsure.update(ids[start : start + EXPIRE_BATCH])
                self.wheel.arm_many(ids[start:], trio.current_time())
                self._failed(exc)
                raise

    def _failed(self, exc: Exception) -> None:
        """A statement failed; after OUTAGE_MIN of them in a row (the database is away),
        expiry is held for `offline_after`."""
        if not is_outage(exc):
            return
        now = trio.current_time()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= OUTAGE_MIN:
            if self.held_until < now:
                log.warning(
                    "database away for %.0f s: no sensor goes offline for %.0f s, so that "
                    "those still reporting get a report through first",
                    now - self._failing_since,
                    self.offline_after,
                )
            self.held_until = now + self.offline_after

    async def expire(self, ids: Sequence[int]) -> None:
        """One conditional update for `ids`; publishes those that went offline."""
        expiry = await self._store.expire(ids, self.offline_after)
        self.statements += 1
        self._failing_since = None
        if expiry.offline:
            metrics.TRANSITIONS.labels("offline").inc(len(expiry.offline))
        # Due within a resolution by the database's clock: only the clocks' rates disagreed.
        lagging = self.offline_after - self.wheel.resolution
        self._arm_aged([(i, age) for i, age in expiry.still_online if age >= lagging])
        # Rows another transaction holds: tried again a resolution later (a report committing
        # re-arms its own sensor later still; an operator's open transaction may hold on).
        self.wheel.arm_many(expiry.held, trio.current_time() + self.wheel.resolution)
        self._hub.publish(expiry.offline)
        if self._unsure:
            await self._settle(ids, expiry)

    async def _settle(self, ids: Sequence[int], expiry: Expiry) -> None:
        """Publish those of `ids` a failed statement may have taken offline: this one found
        them offline already, so they are in none of its answers."""
        unsure = [i for i in ids if i in self._unsure]
        if not unsure:
            return
        held = set(expiry.held)  # the failed statement's own rows, maybe: still unsure
        answered = {s.id for s in expiry.offline} | {i for i, _ in expiry.still_online} | held
        lost = [i for i in unsure if i not in answered]
        if lost:
            self._hub.publish(await self._store.offline_states(lost))
        self._unsure.difference_update(i for i in unsure if i not in held)

    async def sweep(self, *, page: int = SWEEP_PAGE) -> None:
        """Mark offline the online sensors silent for longer than any live wheel would allow
        (their instance died), a page at a time."""
        if trio.current_time() < self.held_until:
            return  # the wheel's expiry is held too (an outage); the next sweep comes later
        silent_for = self.offline_after + self.wheel.resolution + SWEEP_GRACE
        after = 0
        while ids := await self._store.stale_page(after, page, silent_for):
            await self.expire(ids)
            after = ids[-1]

    async def prune(self) -> int:
        """Delete events older than `event_retention`, and versions never uploaded that no
        sensor reported since, `PRUNE_BATCH` rows per statement."""
        total = 0
        while True:
            deleted = await self._store.prune_events(self.event_retention, PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    def _arm_aged(self, rows: Sequence[tuple[int, float]]) -> None:
        # The age was measured at the statement's now(), a little before this moment, so these
        # deadlines err late, never early.
        now = trio.current_time()
        for sensor_id, age in rows:
            self.wheel.arm(sensor_id, now - age + self.offline_after)


async def serve_presence(
    store: PresenceStore,
    hub: Hub,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[Tracker] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Recover the wheel, then expire, sweep and prune until cancelled. Starts (hands over the
    tracker, whose `track` the caller registers as a writer sink) at once; the wheel is rebuilt
    in the background while expiry runs (`Tracker.recovered` is set when it is done).

    Transient database errors (`pool.is_transient`) are logged and retried (expiry after
    `FAILURE_PAUSE`, sweep and pruning at their next run); other errors propagate.

    Cancellation: nothing to clean up; a batch cancelled mid-statement is rolled back.
    """
    tracker = Tracker(
        store,
        hub,
        offline_after=settings.offline_after,
        resolution=settings.wheel_resolution,
        sweep_interval=settings.sweep_interval,
        event_retention=settings.event_retention,
    )
    async with trio.open_nursery() as nursery:
        # Started before the wheel is rebuilt, so the daemon answers /readyz at once (a million
        # online sensors take seconds to read): recovery only ever moves a deadline later
        # (`TimingWheel.arm`), and reports committed meanwhile arm theirs through the sink.
        nursery.start_soon(_recover, tracker)
        nursery.start_soon(_expire_forever, tracker)
        # Recovery has just armed what is overdue, so the first sweep can wait a whole interval.
        nursery.start_soon(every, tracker.sweep, tracker.sweep_interval, tracker.sweep_interval)
        nursery.start_soon(every, tracker.prune, 0.0, PRUNE_INTERVAL)
        task_status.started(tracker)
    raise AssertionError("unreachable")  # pragma: no cover


async def _recover(tracker: Tracker) -> None:
    """Rebuild the wheel while expiry already runs. A transient database error waits
    FAILURE_PAUSE and starts it again (arming twice is harmless)."""
    while True:
        try:
            await tracker.recover()
            tracker.recovered.set()
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("presence recovery failed (%r); retrying in %.0f s", exc, FAILURE_PAUSE)
            await trio.sleep(FAILURE_PAUSE)


async def _expire_forever(tracker: Tracker) -> NoReturn:
    while True:
        await trio.sleep_until(tracker.wheel.next_tick_at())
        try:
            await tracker.expire_due()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("expiry failed (%r); retrying in %.0f s", exc, FAILURE_PAUSE)
            await trio.sleep(FAILURE_PAUSE)
