"""The batching writer: the only task that writes sensor reports.

Reports arrive on a bounded trio memory channel (a full channel makes senders wait; nothing is
dropped). The writer takes what has queued up, coalesces it to one row per sensor, and commits it
with one statement (group commit): while one batch commits, the next accumulates. Every report is
resolved exactly once: with its committed row, `UnknownSensor`, or `IngestUnavailable` when it
could not be committed before its deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Final

import trio

from . import metrics
from .db.pool import Connection, Pool, acquire, is_transient
from .db.reports import apply_reports
from .domain import Applied, echo
from .errors import DroneshieldError, IngestUnavailable, UnknownSensor
from .reports import SHUTTING_DOWN, TOO_LATE, Pending, version_problem

log = logging.getLogger(__name__)

RETRY_FIRST: Final = 0.05  # seconds
RETRY_MAX: Final = 2.0  # seconds
RELEASE_TIMEOUT: Final = 5.0  # seconds to hand the held connection back to the pool

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


class Writer:
    def __init__(
        self,
        pool: Pool,
        receive: trio.MemoryReceiveChannel[Pending],
        *,
        batch_max: int,
        shutdown_grace: float,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self._pool = pool
        self._receive = receive
        self._batch_max = batch_max
        self._shutdown_grace = shutdown_grace
        self._sinks = list(sinks)
        self._held: AsyncExitStack | None = None  # releases the connection kept between batches
        self._conn: Connection | None = None
        self.statements = 0  # batches committed, for tests and metrics

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until the channel is closed (then flush what is queued and return).

        Cancellation: what is queued is still committed, shielded, for up to `shutdown_grace`
        seconds; whatever is left is answered `IngestUnavailable`. Nothing is left unresolved.
        """
        task_status.started()
        try:
            async for first in self._receive:
                await self._commit(self._take(first))
        finally:
            with trio.CancelScope(shield=True):
                await self._flush()
                await self._release()

    def _take(self, first: Pending) -> list[Pending]:
        batch = [first]
        while len(batch) < self._batch_max:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    async def _flush(self) -> None:
        with trio.move_on_after(self._shutdown_grace):
            while True:
                try:
                    first = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                await self._commit(self._take(first))
        leftover = []
        while True:
            try:
                leftover.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        # Senders still waiting for room now get BrokenResourceError and answer UNAVAILABLE.
        self._receive.close()
        _resolve_all(leftover, IngestUnavailable(SHUTTING_DOWN))

    async def _commit(self, batch: list[Pending]) -> None:
        """Commit one batch, retrying transient database errors until each report's deadline.

        A batch that fails for any other reason fails only its own reports, never the writer.
        """
        delay = RETRY_FIRST
        # Reports that outwaited their deadline in the queue (overload) are answered, not sent.
        batch = self._expire(batch, TOO_LATE)
        try:
            while batch:
                try:
                    rows = await self._apply(batch)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("batch of %d failed (%r); retrying", len(batch), exc)
                    batch = self._expire(batch, "the database is unavailable; retry")
                    if not batch:
                        return
                    await trio.sleep(min(delay, max(0.0, self._earliest(batch))))
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                self._deliver(batch, rows)
                return
        except trio.Cancelled:
            _resolve_all(batch, IngestUnavailable(SHUTTING_DOWN))
            raise
        except Exception:
            log.exception("batch of %d reports failed", len(batch))
            _resolve_all(batch, DroneshieldError("internal error while storing the report"))

    async def _apply(self, batch: list[Pending]) -> list[Applied]:
        # Shielded: a commit under way finishes (or times out at the reports' deadline) even
        # when the daemon is being cancelled, so an acknowledged report is a committed one.
        serials, versions = coalesce(batch)
        deadline = max(p.deadline for p in batch)
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            started = trio.current_time()
            try:
                rows = await apply_reports(await self._connection(), serials, versions)
            except BaseException:
                # A failed or interrupted statement may leave the connection unusable: the
                # pool checks (or replaces) it, and the next attempt takes another.
                with trio.CancelScope(shield=True):
                    await self._release()
                raise
            self.statements += 1
            metrics.COMMIT_SECONDS.observe(trio.current_time() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            return rows
        assert scope.cancelled_caught
        raise TimeoutError("commit did not finish before the reports' deadline")

    async def _connection(self) -> Connection:
        """The writer keeps one pooled connection between batches: acquiring and releasing it
        per batch cost two trio-asyncio crossings and the pool's reset statement, a round trip
        as long as a small batch's commit."""
        if self._conn is None:
            held = AsyncExitStack()
            self._conn = await held.enter_async_context(acquire(self._pool))
            self._held = held
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

    def _deliver(self, batch: Sequence[Pending], rows: Sequence[Applied]) -> None:
        by_serial = {r.serial: r for r in rows}
        for p in batch:
            row = by_serial.get(p.serial)
            p.resolve(row if row is not None else UnknownSensor(f"unknown sensor {echo(p.serial)}"))
        _count_delivered(batch, by_serial)
        for sink in self._sinks:
            try:
                sink(rows)
            except Exception:
                log.exception("sink %r failed on a batch of %d", sink, len(rows))
