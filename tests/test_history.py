"""The fleet history sampler's timing on MockClock (autojump), with its queries in memory: a
wall clock that is trio's time plus an offset stands in for the database's `now()`.

The SQL (one row per minute whoever samples, pruning, buckets) and `GET /summary/history` run
on PostgreSQL in test_history_db.py.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import pytest
import trio

from droneshield.errors import Invalid
from droneshield.history import (
    FAILURE_PAUSE,
    MAX_POINTS,
    PRUNE_BATCH,
    SAMPLE_AFTER,
    serve_history,
    span,
)

WALL_AT_ZERO = 1_699_999_997.3  # the wall clock when trio's clock reads 0: 17.3 s into a minute
RETENTION = 3600.0


class MemoryHistory:
    """The sampler's store, in memory, on a wall clock derived from trio's."""

    def __init__(self, *, old_samples: int = 0) -> None:
        first = self.minute() - 120 - old_samples  # samples from long before the retention
        self.rows: dict[int, float] = {first + i: 0.0 for i in range(old_samples)}
        self.calls: list[float] = []  # wall time of every sample call
        self.failures: list[BaseException] = []  # raised by the next sample calls, in order
        self.pruned: list[int] = []  # rows deleted by each prune statement

    @staticmethod
    def wall() -> float:
        return WALL_AT_ZERO + trio.current_time()

    def minute(self) -> int:
        return math.floor(self.wall() / 60)

    async def sample(self) -> tuple[bool, float]:
        await trio.sleep(0.01)  # a statement takes a little while
        self.calls.append(self.wall())
        if self.failures:
            raise self.failures.pop(0)
        written = self.minute() not in self.rows
        self.rows.setdefault(self.minute(), self.wall())
        return written, 60 - self.wall() % 60

    async def prune(self, older_than: float, limit: int) -> int:
        cutoff = (self.wall() - older_than) / 60
        old = sorted(m for m in self.rows if m < cutoff)[:limit]
        for m in old:
            del self.rows[m]
        self.pruned.append(len(old))
        return len(old)


async def _run(store: MemoryHistory, nursery: trio.Nursery) -> None:
    await nursery.start(partial(serve_history, store, retention=RETENTION))


async def test_one_sample_per_minute_taken_just_after_each_minute_starts(autojump_clock, nursery):
    store = MemoryHistory()
    with trio.fail_after(11 * 60):  # on the mock clock, as every bound here
        await _run(store, nursery)
        start = store.minute()
        await trio.sleep(10 * 60)
    assert sorted(store.rows) == list(range(start, start + 11))
    for minute, taken in store.rows.items():
        if minute != start:  # the first is taken at start-up
            assert minute * 60 + SAMPLE_AFTER <= taken < minute * 60 + SAMPLE_AFTER + 0.1
    assert len(store.calls) == 11  # one statement per minute, no busy loop


async def test_two_daemons_sampling_one_fleet_write_one_row_per_minute(autojump_clock, nursery):
    store = MemoryHistory()
    with trio.fail_after(32 * 60):
        await _run(store, nursery)
        await trio.sleep(23.0)  # the second daemon starts later, out of step
        await _run(store, nursery)
        start = store.minute()
        await trio.sleep(30 * 60)
    assert sorted(store.rows) == list(range(start, start + 31))
    assert len(store.calls) == 2 * 31  # each samples every minute; the second writes nothing


async def test_a_failed_sample_is_retried_within_its_minute(autojump_clock, nursery):
    store = MemoryHistory()
    with trio.fail_after(120):
        await _run(store, nursery)
        start = store.minute()
        await trio.sleep(1)  # past the start-up sample
        store.failures = [OSError("connection reset"), OSError("connection reset")]
        await trio.sleep(60)
    assert sorted(store.rows) == [start, start + 1]
    taken = store.rows[start + 1]
    first_try = (start + 1) * 60 + SAMPLE_AFTER
    assert first_try + 2 * FAILURE_PAUSE <= taken < first_try + 2 * FAILURE_PAUSE + 0.1


async def test_a_statement_that_is_wrong_stops_the_sampler():
    store = MemoryHistory()
    store.failures = [ValueError("not transient")]
    with trio.fail_after(5), pytest.raises(ValueError, match="not transient"):
        await serve_history(store, retention=RETENTION)


async def test_old_samples_are_pruned_in_batches(autojump_clock, nursery):
    store = MemoryHistory(old_samples=2 * PRUNE_BATCH + 500)
    with trio.fail_after(120):
        await _run(store, nursery)
        await trio.sleep(60)
    assert store.pruned == [PRUNE_BATCH, PRUNE_BATCH, 500, 0]  # then one statement a minute
    assert len(store.rows) == 2


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_span_defaults_to_the_last_day_in_minutes():
    asked = span(None, None, None, NOW)
    assert (asked.start, asked.end, asked.step) == (NOW - timedelta(days=1), NOW, "1m")
    assert asked.points == 1440


def test_a_span_without_a_step_takes_the_finest_that_fits():
    assert span(NOW - timedelta(days=7), NOW, None, NOW).step == "5m"
    assert span(NOW - timedelta(days=30), NOW, None, NOW).step == "1h"
    assert span(NOW - timedelta(days=365), NOW, None, NOW).step == "1d"
    with pytest.raises(Invalid, match="shorten the range"):
        span(NOW - timedelta(days=3650), NOW, None, NOW)


def test_naive_times_are_utc():
    asked = span(datetime(2026, 12, 1, 10), datetime(2026, 12, 1, 11), "5m", NOW)
    assert asked.start == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert asked.points == 12


@pytest.mark.parametrize(
    ("start", "end", "step", "code"),
    [
        (NOW, NOW, None, "invalid_range"),
        (NOW, NOW - timedelta(hours=1), "1m", "invalid_range"),
        (NOW - timedelta(days=3), NOW, "1m", "too_many_points"),
        (NOW - timedelta(days=1), NOW, "2m", "invalid_step"),
        # Years the arithmetic or the conversion to UTC overflowed (a 500).
        (None, datetime(1, 1, 1), None, "invalid_range"),
        (
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
            datetime(1, 1, 2, tzinfo=UTC),
            None,
            "invalid_range",
        ),
        # Buckets are aligned to midnight: ten days of 5m from 00:02 touch 2,881 of them.
        (datetime(2026, 11, 1, 0, 2), datetime(2026, 11, 11, 0, 2), "5m", "too_many_points"),
    ],
)
def test_bad_spans_are_refused_with_a_code(start, end, step, code):
    with pytest.raises(Invalid) as caught:
        span(start, end, step, NOW)
    assert caught.value.code == code


def test_too_many_points_names_a_step_that_fits():
    with pytest.raises(Invalid, match="use step=5m"):
        span(NOW - timedelta(days=3), NOW, "1m", NOW)
    assert MAX_POINTS >= 1440  # a day of minutes fits
