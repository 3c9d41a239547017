"""The batching writer: the only code that writes sensor reports.

Reports arrive on a bounded trio memory channel (a full channel makes senders wait; nothing is
dropped). The writer hands each report to one of K lanes (lanes.py: the first lane until it
falls behind or is held, a sensor with a report in flight in the lane that holds it); each lane
is a task holding its own pooled connection, takes what has queued up for it, coalesces it to
one row per sensor, and commits it with one statement (group commit): while one batch
commits, the next accumulates. Lanes commit side by side under load, so one daemon is not
held to one connection's limit; a sensor's reports keep their order and two lanes never lock
the same sensor row. A sensor whose row another transaction holds (an operator's open `psql`)
is set apart in the side lane (lanes.py), so it holds up no other sensor's reports. Every
report is resolved exactly once: with its committed row,
`UnknownSensor` (unknown or retired), or `IngestUnavailable` when it could not be committed
before its deadline. A call whose reports span lanes is answered when the last of them is (the
bridge counts them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Final

import trio

from . import metrics
from .db.pool import Connection, Pool, acquire, is_lock_timeout, is_row_error, is_transient
from .db.reports import apply_reports, limit_lock_wait, locked_serial, retired
from .domain import Applied, echo
from .errors import DroneshieldError, IngestUnavailable, UnknownSensor
from .lanes import SPILL_AT, LanePlacement
from .reports import SHUTTING_DOWN, TOO_LATE, Pending, version_problem

log = logging.getLogger(__name__)

RETRY_FIRST: Final = 0.05  # seconds
RETRY_MAX: Final = 2.0  # seconds
RELEASE_TIMEOUT: Final = 5.0  # seconds to hand the held connection back to the pool
# Splits a batch that a row's error failed (`pool.is_row_error`) may take, in all: ~11 find
# one bad row among 2,000, so a few are found; an error every row raises (a constraint no
# report can meet) fails the batch after ~2 x 64 + 1 statements, not after ~4,000.
SPLITS_MAX: Final = 64
# Seconds a batch statement waits for a sensor's row that another transaction holds (an
# operator's open `psql` transaction) before that sensor's reports are set apart and the rest
# of the batch is committed without them; before, every report of the batch waited for its
# deadline. Well above what the daemon's own statements hold rows for (an expiry statement of
# 5,000 sensors: ~0.5 s), so it is no part of ordinary contention; a wait on another table's
# row (the shared counters) is retried after it, as any transient error.
LOCK_WAIT: Final = 3.0
# Seconds between two rounds of the side lane while it carries reports of sensors whose rows are
# still held: a role's shorter lock_timeout must not make it a loop of statements.
SIDE_ROUND_MIN: Final = 0.25

Sink = Callable[[Sequence[Applied]], None]
"""Told about every committed batch (the presence tracker, the hub). Must not block."""


def coalesce(batch: Sequence[Pending]) -> tuple[list[str], list[str | None]]:
    """One (serial, version) per sensor, serials sorted so that concurrent writers lock rows in
    the same order. The last report wins; a report without a usable version keeps the version
    an earlier report in the batch carried, as it would have had the reports committed apart."""
    latest: dict[str, str | None] = {}
    for p in batch:
        if p.version is not None or p.serial not in latest:
            latest[p.serial] = p.version
    serials = sorted(latest)
    return serials, [latest[s] for s in serials]


def _split(
    batch: Sequence[Pending], first: Callable[[str], bool]
) -> tuple[list[Pending], list[Pending]]:
    """`batch` in two by serial, the reports of the serials `first` picks first: a sensor's
    reports stay together, in order."""
    return [p for p in batch if first(p.serial)], [p for p in batch if not first(p.serial)]


def _halves(batch: Sequence[Pending]) -> tuple[list[Pending], list[Pending]]:
    """`batch` split in two by serial (one sensor: the first half is empty)."""
    serials = sorted({p.serial for p in batch})
    return _split(batch, set(serials[: len(serials) // 2]).__contains__)


class _RowLocked(Exception):
    """A batch statement timed out waiting for `serial`'s row (another transaction holds it)."""

    def __init__(self, serial: str) -> None:
        super().__init__(serial)
        self.serial = serial

    def parts(self, batch: Sequence[Pending]) -> tuple[list[Pending], list[Pending]]:
        """The other sensors' reports, then the locked sensor's."""
        return _split(batch, self.serial.__ne__)


async def _held_serial(conn: Connection, exc: Exception, serials: Sequence[str]) -> str | None:
    """Which of `serials` the failed batch statement waited for past its lock wait, if
    PostgreSQL's error says (it does for the first session waiting for the row, in English);
    None otherwise: the batch is retried whole."""
    if not is_lock_timeout(exc):
        return None
    try:
        serial = await locked_serial(conn, exc)
    except Exception as lookup:
        log.warning("the row a batch waited for was not found (%r)", lookup)
        return None
    return serial if serial in serials else None


def _resolve_all(batch: Sequence[Pending], error: DroneshieldError) -> None:
    outcome = "unavailable" if isinstance(error, IngestUnavailable) else "failed"
    metrics.REPORTS.labels(outcome).inc(len(batch))
    for p in batch:
        p.resolve(error)


def _count_delivered(batch: Sequence[Pending], by_serial: dict[str, Applied]) -> None:
    # One increment per outcome and batch, not per report: this runs at ingest rate.
    counts = dict.fromkeys(("ok", "version_not_stored", "unknown_sensor"), 0)
    for p in batch:
        row = by_serial.get(p.serial)
        if row is None:
            counts["unknown_sensor"] += 1
        elif version_problem(p.version, p.note, row) is not None:
            counts["version_not_stored"] += 1
        else:
            counts["ok"] += 1
    for outcome, n in counts.items():
        if n:
            metrics.REPORTS.labels(outcome).inc(n)


def _take(receive: trio.MemoryReceiveChannel[Pending], first: Pending, most: int) -> list[Pending]:
    """`first` and whatever else is queued, up to `most` reports, without waiting."""
    return _fill(receive, [first], most)


def _fill(
    receive: trio.MemoryReceiveChannel[Pending], batch: list[Pending], most: int
) -> list[Pending]:
    """`batch` and whatever is queued after it, up to `most` reports, without waiting."""
    while len(batch) < most:
        try:
            batch.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


def _drain(receive: trio.MemoryReceiveChannel[Pending]) -> list[Pending]:
    """Everything still queued, without waiting."""
    left = []
    while True:
        try:
            left.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return left


class _Lane:
    """One lane: a task that commits the reports the writer hands it (`LanePlacement`), on a
    pooled connection it keeps between batches; or the side lane, which takes the reports of
    sensors whose rows another transaction held, from the others (and the writer), commits
    them in rounds (those of sensors whose rows are still held wait for the next round, so
    one held row holds up no other sensor there either), and keeps no connection between
    its rounds."""

    def __init__(
        self,
        pool: Pool,
        *,
        index: int,
        placement: LanePlacement,
        room: trio.lowlevel.ParkingLot,
        batch_max: int,
        shutdown_grace: float,
        lock_wait: float,
        sinks: list[Sink],
    ) -> None:
        self._pool = pool
        self._lock_wait = lock_wait
        self._index = index
        self._is_side_lane = index == placement.side_lane
        # The side lane's channel, for a regular lane (a clone of its own, closed at its end).
        self.side_send: trio.MemorySendChannel[Pending] | None = None
        self._placement = placement  # the writer's: told what this lane takes and answers
        self._room = room  # the writer's: woken when this lane takes a batch or closes
        self._batch_max = batch_max
        self._shutdown_grace = shutdown_grace
        self._sinks = sinks  # the writer's list: a sink added later reaches every lane
        self._held: AsyncExitStack | None = None  # releases the connection kept between batches
        self._conn: Connection | None = None
        self._grace_ends: float | None = None  # when the shutdown grace ends, once it started
        # Reports of the batch committing that left it already, by identity: answered by
        # `_attempts` and let move (a part committed apart from a held sensor may itself set
        # another apart), or handed to the side lane.
        self._gone_early: dict[int, Pending] = {}
        # The side lane's: reports of sensors whose rows were still held, for its next round.
        self._carried: list[Pending] = []
        self._round_at = -math.inf  # when the side lane's last round began
        self.statements = 0

    async def run(self, *, task_status: trio.TaskStatus[trio.MemorySendChannel[Pending]]) -> None:
        """Commit batches from this lane's channel (handed to the writer through `started`)
        until it is closed.

        Cancellation: the lane keeps committing what the writer hands over for up to
        `shutdown_grace` seconds (shielded) or until the writer closes the channel; whatever is
        left is answered `IngestUnavailable`.
        """
        # Room for one batch while another commits: the writer waits on a full lane, so the
        # daemon's queue, not the lanes, holds the backlog (and applies backpressure). The side
        # lane's is unbounded: regular lanes hand it reports without waiting (they must not be
        # held up by it), and it takes a batch every round, a lock wait per sensor still held.
        size = math.inf if self._is_side_lane else self._batch_max
        send, receive = trio.open_memory_channel[Pending](size)
        self._grace_ends = None
        task_status.started(send)
        try:
            while (batch := await self._next_batch(receive)) is not None:
                await self._commit_taken(batch)
        finally:
            with trio.CancelScope(shield=True):
                await self._flush(receive)
                await self._release()
                if self.side_send is not None:
                    self.side_send.close()  # the side lane ends once every lane has

    def _grace(self) -> trio.CancelScope:
        """The shutdown grace, shielded: one deadline, from the first time the lane needs it,
        for a batch that was waiting to retry and for the reports still queued."""
        if self._grace_ends is None:
            self._grace_ends = trio.current_time() + self._shutdown_grace
        return trio.CancelScope(shield=True, deadline=self._grace_ends)

    async def _next_batch(
        self, receive: trio.MemoryReceiveChannel[Pending]
    ) -> list[Pending] | None:
        """What the side lane carried from its last round and what is queued after it; else,
        once a report arrives, it and what is queued with it. None once the channel is closed
        and nothing is carried."""
        if self._carried:
            await trio.sleep_until(self._round_at + SIDE_ROUND_MIN)
            batch, self._carried = self._carried, []
            batch = _fill(receive, batch, self._batch_max)
        else:
            try:
                first = await receive.receive()
            except trio.EndOfChannel:
                return None
            batch = _take(receive, first, self._batch_max)
        self._round_at = trio.current_time()
        return batch

    async def _flush(self, receive: trio.MemoryReceiveChannel[Pending]) -> None:
        with self._grace():
            while (batch := await self._next_batch(receive)) is not None:
                await self._commit_taken(batch)
        leftover, self._carried = self._carried + _drain(receive), []
        # The writer, still handing over, now gets BrokenResourceError and answers the rest.
        receive.close()
        self._room.unpark_all()  # a router waiting for room finds this lane closed
        self._placement.taken(self._index, len(leftover), trio.current_time())
        _resolve_all(leftover, IngestUnavailable(SHUTTING_DOWN))
        self._placement.finished(self._index, (p.serial for p in leftover))

    async def _commit_taken(self, batch: list[Pending]) -> None:
        """`_commit` a batch just taken from the channel (the channel has room: a router waiting
        for room is woken); once every report of it is answered, its sensors may move to
        another lane (those committed apart from a held sensor's earlier: `_answered`)."""
        placement = self._placement
        placement.taken(self._index, len(batch), trio.current_time())
        self._room.unpark_all()
        if placement.apart and not self._is_side_lane:
            apart, batch = _split(batch, placement.apart.__contains__)
            if apart:
                self._to_side_lane(apart)
        self._gone_early = {}
        try:
            await self._commit(batch)
        finally:
            early = self._gone_early
            placement.finished(self._index, (p.serial for p in batch if id(p) not in early))
            if self._is_side_lane:
                with trio.CancelScope(shield=True):
                    await self._release()  # it may not commit again for hours

    def _to_side_lane(self, reports: list[Pending]) -> None:
        """Hand `reports` (of sensors set apart) to the side lane, in order; they stay in
        flight there. Once the side lane has stopped (the shutdown grace is over) they are
        answered here."""
        assert self.side_send is not None
        sent = 0
        try:
            for p in reports:
                self.side_send.send_nowait(p)
                sent += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            left = reports[sent:]
            _resolve_all(left, IngestUnavailable(SHUTTING_DOWN))
            self._placement.answered(p.serial for p in left)
        self._placement.passed_on(sent)

    async def _commit(self, batch: list[Pending]) -> None:
        """Commit one batch, retrying transient database errors until each report's deadline.

        A batch that fails for any other reason fails only its own reports, never the writer;
        one that a row's error failed is committed in halves (`_attempts`) until only the
        sensors whose rows fail are left, and one that waited past `lock_wait` for a sensor's
        row is committed without that sensor first. Cancelled while it waits to retry (the
        daemon stops while the database is failing), it goes on retrying for the shutdown
        grace, as the reports still queued are committed; what is left then is answered
        SHUTTING_DOWN.
        """
        # Reports that outwaited their deadline in the queue (overload) are answered, not sent.
        left = self._expire(batch, TOO_LATE)
        splits = [SPLITS_MAX]  # one budget for the batch, its retry in the grace included
        try:
            await self._attempts(left, splits)
        except trio.Cancelled:
            with self._grace():
                await self._attempts(left, splits)
            if left:
                _resolve_all(left, IngestUnavailable(SHUTTING_DOWN))
            raise

    async def _attempts(self, batch: list[Pending], splits: list[int]) -> None:
        """Commit `batch`, retrying; when a row's error fails it, in halves, and when a sensor's
        row is held elsewhere, without that sensor first (`splits`: how many splits the whole
        batch has left, a cell its parts share). The reports answered, or set aside
        (`_set_aside`), leave the list: all of them, unless this is cancelled (while it waits to
        retry, or before a part's statement)."""
        failed = await self._attempt(batch, isolate=splits[0] > 0)
        if failed is None:
            return
        others: list[Pending] = []  # the reports committed apart from a held sensor's
        if isinstance(failed, _RowLocked):
            parts = failed.parts(batch)
            self._set_aside(failed.serial, parts[1])
            others = parts[0][:]
            if not others:
                batch.clear()  # the held sensor's, and nothing else
                return
        elif is_row_error(failed) and splits[0] > 0 and (parts := _halves(batch))[0]:
            log.warning("batch of %d failed (%r); committing it in halves", len(batch), failed)
        else:
            log.error("batch of %d reports failed: %r", len(batch), failed, exc_info=failed)
            _resolve_all(batch, DroneshieldError("internal error while storing the report"))
            batch.clear()
            return
        splits[0] -= 1
        metrics.BATCH_SPLITS.inc()
        try:
            for part in parts:
                # A part may start well after the batch did (its sibling retried meanwhile).
                part[:] = self._expire(part, TOO_LATE)
                await self._attempts(part, splits)
                if others and part is parts[0]:
                    # Answered: their next reports need not wait in this lane behind the
                    # held sensor's retries.
                    self._answered(others)
        finally:
            batch[:] = [p for part in parts for p in part]

    async def _attempt(self, batch: list[Pending], *, isolate: bool) -> Exception | None:
        """Commit `batch`, retrying transient errors until the reports' deadlines; the reports
        answered leave the list. The error that failed it otherwise (its reports unanswered),
        or, with `isolate`, the sensor whose row another transaction held (`_RowLocked`)."""
        delay = RETRY_FIRST
        try:
            while batch:
                # Not once the shutdown grace is over: the attempt, shielded, would outlast it.
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    rows, gone = await self._apply(batch, isolate=isolate)
                except Exception as exc:
                    if isinstance(exc, _RowLocked) or not is_transient(exc):
                        raise
                    log.warning("batch of %d failed (%r); retrying", len(batch), exc)
                    batch[:] = self._expire(batch, "the database is unavailable; retry")
                    if batch:
                        await trio.sleep(min(delay, max(0.0, self._earliest(batch))))
                        delay = min(delay * 2, RETRY_MAX)
                    continue
                self._deliver(batch, rows, gone)
                batch.clear()
        except Exception as exc:
            return exc
        return None

    def _set_aside(self, serial: str, reports: list[Pending]) -> None:
        """`serial`'s row is held by another transaction: its `reports` leave this batch, to
        the side lane (from a regular lane), or to the side lane's next round."""
        placement = self._placement
        if self._is_side_lane:
            log.info(
                "sensor %s's row is still held by another transaction: its %d reports wait "
                "for the side lane's next round",
                echo(serial),
                len(reports),
            )
            self._carried += reports
            placement.passed_on(len(reports))
        else:
            log.warning(
                "sensor %s's row is held by another transaction (over %g s): its %d reports "
                "go to the writer's side lane, the rest of the batch is committed",
                echo(serial),
                self._lock_wait,
                len(reports),
            )
            placement.set_apart(serial, trio.current_time())
            self._to_side_lane(reports[:])
        self._gone_early.update((id(p), p) for p in reports)
        reports.clear()

    def _answered(self, reports: list[Pending]) -> None:
        """Let the sensors of `reports`, answered while the lane's batch still commits, move
        to another lane; each report once."""
        early = self._gone_early
        fresh = [p for p in reports if id(p) not in early]
        self._placement.answered(p.serial for p in fresh)
        early.update((id(p), p) for p in fresh)

    async def _apply(
        self, batch: list[Pending], *, isolate: bool
    ) -> tuple[list[Applied], set[str]]:
        """The committed rows, and the serials of the batch that are retired.

        Raises:
            _RowLocked: with `isolate`, the statement waited past `lock_wait` for the row of
                one of the batch's sensors.
        """
        # Shielded: a commit under way finishes (or times out at the reports' deadline) even
        # when the daemon is being cancelled, so an acknowledged report is a committed one.
        serials, versions = coalesce(batch)
        deadline = max(p.deadline for p in batch)
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            started = trio.current_time()
            conn: Connection | None = None
            try:
                conn = await self._connection()
                rows = await apply_reports(conn, serials, versions)
                # Rare (a report for a sensor that is not listed): worth a second query to
                # tell the sensor why.
                gone = await retired(conn, serials) if len(rows) < len(serials) else set()
            except BaseException as exc:
                held = None
                try:
                    if isolate and conn is not None and isinstance(exc, Exception):
                        held = await _held_serial(conn, exc, serials)
                finally:
                    # A failed or interrupted statement may leave the connection unusable:
                    # the pool checks (or replaces) it, and the next attempt takes another.
                    with trio.CancelScope(shield=True):
                        await self._release()
                if held is not None:
                    raise _RowLocked(held) from exc
                raise
            self.statements += 1
            metrics.LANE_COMMITS.labels("side" if self._is_side_lane else str(self._index)).inc()
            metrics.COMMIT_SECONDS.observe(trio.current_time() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            if self._is_side_lane:
                self._placement.freed(r.serial for r in rows)
            return rows, gone
        assert scope.cancelled_caught
        raise TimeoutError("commit did not finish before the reports' deadline")

    async def _connection(self) -> Connection:
        """The writer keeps one pooled connection between batches: acquiring and releasing it
        per batch cost two trio-asyncio crossings and the pool's reset statement, a round trip
        as long as a small batch's commit. Its statements wait `lock_wait` for a row lock at
        most (`limit_lock_wait`; the pool's reset undoes that when it is released)."""
        if self._conn is None:
            held = AsyncExitStack()
            self._conn = await held.enter_async_context(acquire(self._pool))
            self._held = held
            await limit_lock_wait(self._conn, self._lock_wait)
        return self._conn

    async def _release(self) -> None:
        held, self._held, self._conn = self._held, None, None
        if held is not None:
            with trio.move_on_after(RELEASE_TIMEOUT):
                await held.aclose()

    @staticmethod
    def _earliest(batch: list[Pending]) -> float:
        """Seconds until the first report of the batch expires."""
        return min(p.deadline for p in batch) - trio.current_time()

    def _expire(self, batch: list[Pending], reason: str) -> list[Pending]:
        now = trio.current_time()
        alive = [p for p in batch if p.deadline > now]
        expired = [p for p in batch if p.deadline <= now]
        if expired:
            _resolve_all(expired, IngestUnavailable(reason))
        return alive

    def _deliver(
        self, batch: Sequence[Pending], rows: Sequence[Applied], retired: set[str]
    ) -> None:
        by_serial = {r.serial: r for r in rows}
        for p in batch:
            row = by_serial.get(p.serial)
            if row is not None:
                p.resolve(row)
            elif p.serial in retired:
                p.resolve(
                    UnknownSensor(
                        f"sensor {echo(p.serial)} was retired; provision it again to accept "
                        "its reports",
                        code="sensor_retired",
                    )
                )
            else:
                p.resolve(UnknownSensor(f"unknown sensor {echo(p.serial)}"))
        _count_delivered(batch, by_serial)
        for sink in self._sinks:
            try:
                sink(rows)
            except Exception:
                log.exception("sink %r failed on a batch of %d", sink, len(rows))


class Writer:
    """Routes reports from the daemon's queue to `lanes` lanes and the side lane after them
    (`LanePlacement`)."""

    def __init__(
        self,
        pool: Pool,
        receive: trio.MemoryReceiveChannel[Pending],
        *,
        lanes: int,
        batch_max: int,
        shutdown_grace: float,
        lock_wait: float = LOCK_WAIT,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self._receive = receive
        self._batch_max = batch_max
        self._shutdown_grace = shutdown_grace
        self._sinks = list(sinks)
        # A lane's channel holds batch_max reports: past that it is full, whatever SPILL_AT says.
        self._placement = LanePlacement(lanes, spill_at=min(SPILL_AT, batch_max))
        self._room = trio.lowlevel.ParkingLot()  # the router, waiting for any lane to have room
        self._lanes = [
            _Lane(
                pool,
                index=index,
                placement=self._placement,
                room=self._room,
                batch_max=batch_max,
                shutdown_grace=shutdown_grace,
                lock_wait=lock_wait,
                sinks=self._sinks,
            )
            for index in range(lanes + 1)  # the last: the side lane
        ]

    @property
    def statements(self) -> int:
        """Batches committed by all lanes, for tests and metrics."""
        return sum(self.lane_statements)

    @property
    def lane_statements(self) -> list[int]:
        """Batches committed by each lane, for tests."""
        return [lane.statements for lane in self._lanes]

    @property
    def in_flight(self) -> int:
        """Reports handed to the lanes and not yet answered (none once the writer returned)."""
        return self._placement.in_flight()

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the lanes, then hand them reports until the queue is closed (then let them
        commit what they hold, and return).

        Cancellation: for up to `shutdown_grace` seconds (shielded) queued reports are still
        handed over and committed; whatever is left is answered `IngestUnavailable`. Nothing is
        left unresolved.
        """
        *lanes, side = self._lanes
        async with trio.open_nursery() as nursery:
            side_lane = await nursery.start(side.run)
            for lane in lanes:
                lane.side_send = side_lane.clone()
            sends = [await nursery.start(lane.run) for lane in lanes]
            task_status.started()
            await self._route([*sends, side_lane])

    async def _route(self, lanes: list[trio.MemorySendChannel[Pending]]) -> None:
        carried: list[Pending] = []  # taken from the queue, not yet in a lane
        try:
            async for first in self._receive:
                carried = _take(self._receive, first, self._batch_max)
                if not await self._hand_over(carried, lanes):
                    break  # a lane has stopped (it crashed): the rest is answered below
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self._shutdown_grace):
                    while await self._hand_over(carried, lanes):
                        try:
                            first = self._receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        carried = _take(self._receive, first, self._batch_max)
                for send in lanes:
                    send.close()  # each lane commits what it holds, then returns
                leftover = carried + _drain(self._receive)
                # Senders still waiting for room now get BrokenResourceError: UNAVAILABLE.
                self._receive.close()
                _resolve_all(leftover, IngestUnavailable(SHUTTING_DOWN))

    async def _hand_over(
        self, reports: list[Pending], lanes: list[trio.MemorySendChannel[Pending]]
    ) -> bool:
        """Put each report in the lane `LanePlacement` gives it (`_put` when that lane is full);
        True when all are in.

        Reports a lane took are removed from `reports`, so when this is interrupted (cancelled,
        or a lane that stopped at the end of its grace) `reports` holds exactly those no lane
        has."""
        placement = self._placement
        now = trio.current_time()
        handed = 0
        try:
            for report in reports:
                # Inline, not a coroutine per report: this runs at ingest rate.
                lane = lanes[placement.place(report.serial, now)]
                try:
                    lane.send_nowait(report)
                except trio.WouldBlock:
                    placement.unplace(report.serial)
                    await self._put(report, lanes)
                    now = trio.current_time()  # it may have waited
                except BaseException:
                    placement.unplace(report.serial)  # the lane did not get it
                    raise
                handed += 1
        except trio.BrokenResourceError:
            return False
        finally:
            del reports[:handed]
        return True

    async def _put(self, report: Pending, lanes: list[trio.MemorySendChannel[Pending]]) -> None:
        """Put `report` in its lane, that lane being full. The lane holding the sensor's
        reports in flight is waited for (their order); a sensor free to move waits for
        whichever lane takes a batch first, never behind one lane that cannot commit (a row
        lock held elsewhere: every lane full, the fewest waiting may be that one's)."""
        placement = self._placement
        while True:
            pinned = report.serial in placement
            lane = lanes[placement.place(report.serial, trio.current_time())]
            try:
                if pinned:
                    await lane.send(report)
                    return
                lane.send_nowait(report)
                return
            except trio.WouldBlock:
                placement.unplace(report.serial)  # every lane is full: wait, then again
            except BaseException:
                placement.unplace(report.serial)  # the lane did not get it
                raise
            await self._room.park()
