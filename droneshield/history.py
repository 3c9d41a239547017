"""Fleet history: a sampler writes the fleet's totals (by status, by version and by site) once a
minute into `fleet_history`, and prunes samples older than the retention in small batches.

Every daemon (and every `--workers` worker) runs a sampler; the minute is the table's key and
the database's clock picks it, so the fleet gets one row per minute however many run, and a
daemon that dies leaves no gap while another lives. Each sampler asks the database how far the
next minute is and wakes `SAMPLE_AFTER` seconds past it, so samples stay aligned to minutes
whatever the daemon's clock drifts, and a sample is never skipped by waking just before a
minute ends and just after the next one ends.

`GET /summary/history` (web/summary.py) reads the samples back in buckets of a step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, NoReturn, Protocol

import trio

from .db import history as db
from .db.pool import Pool, acquire, is_transient
from .errors import Invalid

log = logging.getLogger(__name__)

SAMPLE_AFTER: Final = 1.0  # seconds past the minute a sample is taken
FAILURE_PAUSE: Final = 5.0  # seconds before trying again after a database error
PRUNE_BATCH: Final = 1_000  # samples deleted per statement


class HistoryStore(Protocol):
    """The sampler's queries (`db.history.HistoryDb` is the real one)."""

    async def sample(self) -> tuple[bool, float]:
        """Write this minute's totals unless written: (written, seconds to the next minute)."""
        ...

    async def prune(self, older_than: float, limit: int) -> int: ...


async def prune(store: HistoryStore, retention: float) -> int:
    """Delete samples older than `retention` seconds, `PRUNE_BATCH` per statement; how many."""
    total = 0
    while True:
        deleted = await store.prune(retention, PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


async def serve_history(
    store: HistoryStore,
    *,
    retention: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Sample now, then `SAMPLE_AFTER` seconds past every minute, pruning after each sample.

    A transient database error (`pool.is_transient`) is logged and retried after
    `FAILURE_PAUSE` (within the same minute, so the minute still gets its row); other errors
    propagate.

    Cancellation: nothing to clean up; a statement cancelled midway is rolled back.
    """
    task_status.started()
    while True:
        try:
            written, until_next = await store.sample()
            await prune(store, retention)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("fleet history sample failed (%r); retrying in %.0f s", exc, FAILURE_PAUSE)
            await trio.sleep(FAILURE_PAUSE)
            continue
        log.debug("fleet history sampled (%s)", "written" if written else "already written")
        await trio.sleep(until_next + SAMPLE_AFTER)


STEPS: Final[dict[str, timedelta]] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
RANGE_DEFAULT: Final = timedelta(hours=24)
# Buckets start at multiples of their step from here (db/history.py aligns them alike), so a
# day's bucket starts at midnight UTC.
BUCKET_ORIGIN: Final = datetime(2000, 1, 1, tzinfo=UTC)
# Instants a range may name: history is kept for days, and years far from now overflowed the
# arithmetic (year 1 minus a day) and the driver's conversion to UTC, a 500.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9999, 1, 1, tzinfo=UTC)
MAX_POINTS: Final = 2_880  # buckets one answer may hold (two days of minutes, a week of 5m)


@dataclass(frozen=True, slots=True)
class Span:
    """A validated range of history and the step it is bucketed by."""

    start: datetime
    end: datetime
    step: str

    @property
    def points(self) -> int:
        """The most buckets this span can answer with: those from the one `start` falls in
        (buckets are aligned to midnight UTC, not to `start`) to the one before `end`."""
        step = STEPS[self.step]
        first = self.start - (self.start - BUCKET_ORIGIN) % step
        return math.ceil((self.end - first) / step)


def span(start: datetime | None, end: datetime | None, step: str | None, now: datetime) -> Span:
    """The range asked for: `end` defaults to `now`, `start` to `RANGE_DEFAULT` before `end`,
    `step` to the finest that keeps to `MAX_POINTS`. Times without an offset are UTC.

    Raises:
        Invalid: `start` is not before `end` (`invalid_range`), `step` is not one of `STEPS`
            (`invalid_step`), or the range holds more than `MAX_POINTS` steps
            (`too_many_points`).
    """
    end = _utc(end) if end is not None else now
    start = _utc(start) if start is not None else max(end - RANGE_DEFAULT, EARLIEST)
    if start >= end:
        raise Invalid(
            f"from ({start.isoformat()}) must be before to ({end.isoformat()})",
            code="invalid_range",
        )
    if step is None:
        step = next((s for s in STEPS if Span(start, end, s).points <= MAX_POINTS), "1d")
    if step not in STEPS:
        raise Invalid(f"step must be one of {', '.join(STEPS)}", code="invalid_step")
    asked = Span(start, end, step)
    if asked.points > MAX_POINTS:
        coarser = [s for s in STEPS if Span(start, end, s).points <= MAX_POINTS]
        hint = f"; use step={coarser[0]} or a shorter range" if coarser else "; shorten the range"
        raise Invalid(
            f"{asked.points} points of {step} from {start.isoformat()} to {end.isoformat()}; "
            f"at most {MAX_POINTS}{hint}",
            code="too_many_points",
        )
    return asked


def _utc(at: datetime) -> datetime:
    """`at` in UTC (naive: taken as UTC).

    Raises:
        Invalid: before EARLIEST or after LATEST (`invalid_range`).
    """
    try:
        utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first year a datetime holds
        utc = datetime.min.replace(tzinfo=UTC)
    if not EARLIEST <= utc <= LATEST:
        raise Invalid(
            f"from and to must lie between {EARLIEST.year} and {LATEST.year}",
            code="invalid_range",
        )
    return utc


async def read(pool: Pool, asked: Span, site: str | None = None) -> list[db.Sample]:
    """The last sample of each bucket of the span, oldest first (buckets without samples are
    left out: the daemons were down, or the range is before the first sample); with `site`,
    that site's totals ('' for sensors without a site).

    Raises:
        DatabaseUnavailable: no connection could be had.
    """
    async with acquire(pool) as conn:
        return await db.samples(conn, asked.start, asked.end, STEPS[asked.step], site)
