"""The tracker's timing on MockClock (autojump), with the presence queries in memory.

The same contract on PostgreSQL (conditional update, race, recovery, events) is in
test_presence_db.py.
"""

from __future__ import annotations

import pytest
import trio

from droneshield.config import Settings
from droneshield.hub import Hub
from droneshield.presence import FAILURE_PAUSE, PRUNE_BATCH, Tracker, serve_presence

from .support.memory_store import MemoryPresenceStore

OFFLINE_AFTER = 30.0
RESOLUTION = 1.0
SWEEP_INTERVAL = 60.0


@pytest.fixture
def presence_settings() -> Settings:
    return Settings(
        offline_after=OFFLINE_AFTER,
        wheel_resolution=RESOLUTION,
        sweep_interval=SWEEP_INTERVAL,
        event_retention=3600.0,
    )


async def _start(nursery, store, presence_settings, hub=None) -> Tracker:  # type: ignore[no-untyped-def]
    return await nursery.start(serve_presence, store, hub or Hub(), presence_settings)


async def _report(tracker: Tracker, store: MemoryPresenceStore, *ids: int) -> float:
    """A committed report, delivered to the tracker as the writer's sink would; its time."""
    tracker.track(store.report(ids))
    return trio.current_time()


async def test_one_report_goes_offline_after_offline_after_within_one_resolution(
    autojump_clock, nursery, presence_settings
):
    store = MemoryPresenceStore(3)
    hub = Hub()
    tracker = await _start(nursery, store, presence_settings, hub)
    with hub.subscribe() as sub, trio.fail_after(100):
        await trio.sleep_until(5.3)
        reported = await _report(tracker, store, 1)
        await sub.wait()
        went_offline = trio.current_time()
        [change] = sub.take()
    assert reported + OFFLINE_AFTER <= went_offline <= reported + OFFLINE_AFTER + RESOLUTION
    assert (change.id, change.status) == (1, "offline")
    assert store.offline_times(1) == [went_offline]
    assert not store.rows[1].online
    assert len(tracker.wheel) == 0


async def test_re_reported_sensor_stays_online_until_its_last_report_times_out(
    autojump_clock, nursery, presence_settings
):
    store = MemoryPresenceStore(1)
    tracker = await _start(nursery, store, presence_settings)
    with trio.fail_after(200):
        for t in range(0, 70, 10):
            await trio.sleep_until(t)
            assert store.rows[1].online == (t > 0)
            last = await _report(tracker, store, 1)
        await trio.sleep_until(last + OFFLINE_AFTER - 0.01)
        assert store.rows[1].online
        await trio.sleep_until(last + OFFLINE_AFTER + RESOLUTION)
    assert store.offline_times(1) == [last + OFFLINE_AFTER]
    assert [kind for _, kind, _ in store.events] == ["online", "offline"]


async def test_ten_thousand_staggered_sensors_expire_in_order_one_statement_per_tick(
    autojump_clock, nursery, presence_settings
):
    count = 10_000
    store = MemoryPresenceStore(count)
    tracker = await _start(nursery, store, presence_settings)
    reported = {}
    with trio.fail_after(200):
        for i in range(1, count + 1):  # one report a millisecond, from 0.001 to 10.0
            await trio.sleep_until(i / 1000)
            reported[i] = await _report(tracker, store, i)
        await trio.sleep_until(10.0 + OFFLINE_AFTER + RESOLUTION)
    offline = [(sensor, t) for sensor, kind, t in store.events if kind == "offline"]
    assert sorted(s for s, _ in offline) == list(range(1, count + 1))
    for sensor, t in offline:
        assert reported[sensor] + OFFLINE_AFTER <= t <= reported[sensor] + OFFLINE_AFTER + 1
    assert [s for s, _ in offline] == sorted(reported, key=lambda s: reported[s] // 1 + 1)
    # Deadlines fall in ten ticks (30.001 … 40.0): ten statements of ~1,000 ids, not 10,000.
    assert tracker.statements == 10
    assert [len(ids) for ids in store.expire_calls] == [1000] * 10


async def test_a_slow_database_does_not_leave_the_expiry_further_behind_each_tick(
    autojump_clock, nursery, presence_settings
):
    """Statements slower than a resolution take every tick due by then: lateness stays bounded
    by the statement time, instead of growing by (statement - resolution) per tick."""
    count, delay = 100, 2.5 * RESOLUTION
    store = MemoryPresenceStore(count)
    store.expire_delay = delay
    tracker = await _start(nursery, store, presence_settings)
    reported = {}
    with trio.fail_after(300):
        for i in range(1, count + 1):  # one report every 0.2 s: deadlines in 20 ticks
            await trio.sleep_until(i / 5)
            reported[i] = await _report(tracker, store, i)
        await trio.sleep_until(20.0 + OFFLINE_AFTER + RESOLUTION + 3 * delay)
    offline = {sensor: t for sensor, kind, t in store.events if kind == "offline"}
    assert sorted(offline) == list(range(1, count + 1))
    worst = max(offline[s] - reported[s] - OFFLINE_AFTER for s in offline)
    assert worst <= RESOLUTION + 2 * delay
    assert tracker.statements < 20


async def test_recovery_expires_overdue_sensors_at_start_and_recent_ones_at_their_deadline(
    autojump_clock, nursery, presence_settings
):
    store = MemoryPresenceStore(4)
    await trio.sleep_until(1000.0)
    store.set_online(1, last_seen=1000.0 - 3600)  # went silent while the daemon was down
    store.set_online(2, last_seen=1000.0 - 10)
    store.set_online(3, last_seen=1000.0 - 29.5)
    await _start(nursery, store, presence_settings)
    with trio.fail_after(100):
        await trio.sleep_until(1000.0 + OFFLINE_AFTER + RESOLUTION)
    # Recovery runs beside expiry: the overdue sensor goes at the tick after it is read.
    assert store.offline_times(1) in ([1000.0], [1000.0 + RESOLUTION])
    assert store.offline_times(3) == [1001.0]
    assert store.offline_times(2) == [1020.0]
    assert store.rows[4].last_seen is None  # never reported, and left so
    assert not store.rows[4].online
    assert store.offline_times(4) == []


class _SlowRecoveryStore(MemoryPresenceStore):
    """Recovery's read waits until the test lets it go: a million online sensors."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.release = trio.Event()

    async def online_page(self, after: int, limit: int) -> list[tuple[int, float]]:
        await self.release.wait()
        return await super().online_page(after, limit)


async def test_presence_starts_before_recovery_and_recovery_never_moves_a_deadline_earlier(
    autojump_clock, nursery, presence_settings
):
    store = _SlowRecoveryStore(3)
    await trio.sleep_until(1000.0)
    store.set_online(1, last_seen=1000.0 - 25)  # recovery's view: due at 1005
    store.set_online(2, last_seen=1000.0 - 3600)  # overdue: offline as soon as it is recovered
    with trio.fail_after(1):
        tracker = await _start(nursery, store, presence_settings)  # not waiting for recovery
    assert not tracker.recovered.is_set()
    reported = await _report(tracker, store, 1)  # committed while recovery still reads
    await trio.sleep(10.0)
    store.release.set()
    with trio.fail_after(100):
        await tracker.recovered.wait()
        await trio.sleep_until(reported + OFFLINE_AFTER + RESOLUTION)
    assert store.offline_times(2) == [1010.0 + RESOLUTION]  # the next tick
    assert store.offline_times(1) == [reported + OFFLINE_AFTER]


async def test_recovery_reads_the_online_sensors_a_page_at_a_time(autojump_clock):
    store = MemoryPresenceStore(25)
    for i in range(1, 26):
        store.set_online(i, last_seen=0.0)
    tracker = Tracker(
        store, Hub(), offline_after=30, resolution=1, sweep_interval=60, event_retention=60
    )
    assert await tracker.recover(page=10) == 25
    assert len(tracker.wheel) == 25


async def test_sensor_due_by_the_database_within_a_resolution_is_re_armed(
    autojump_clock, nursery, presence_settings
):
    """The wheel fired a little before the database's own deadline (clock rates differ)."""
    store = MemoryPresenceStore(1)
    tracker = await _start(nursery, store, presence_settings)
    with trio.fail_after(200):
        await trio.sleep_until(100.5)
        store.set_online(1, last_seen=100.5 - OFFLINE_AFTER + 0.9)  # due at 101.4 by the database
        tracker.wheel.arm(1, 100.5)  # fires at 101.0, too early
        await trio.sleep_until(103.0)
    assert store.offline_times(1) == [102.0]
    assert tracker.statements == 2


async def test_sensor_reported_through_another_instance_is_left_to_it(
    autojump_clock, nursery, presence_settings
):
    store = MemoryPresenceStore(1)
    tracker = await _start(nursery, store, presence_settings)
    with trio.fail_after(100):
        reported = await _report(tracker, store, 1)
        await trio.sleep_until(reported + 20)
        store.set_online(1, last_seen=trio.current_time())  # another instance's report
        await trio.sleep_until(reported + OFFLINE_AFTER + RESOLUTION)
    assert store.rows[1].online
    assert 1 not in tracker.wheel
    assert tracker.statements == 1


async def test_safety_sweep_marks_offline_what_no_instance_tracks(
    autojump_clock, nursery, presence_settings
):
    store = MemoryPresenceStore(2)
    tracker = await _start(nursery, store, presence_settings)
    await tracker.recovered.wait()
    store.set_online(1, last_seen=-100.0)  # its instance died; this one never saw it
    with trio.fail_after(200):
        await trio.sleep_until(SWEEP_INTERVAL - 0.01)
        assert store.rows[1].online
        await trio.sleep_until(SWEEP_INTERVAL + RESOLUTION)
    assert store.offline_times(1) == [SWEEP_INTERVAL]
    assert len(tracker.wheel) == 0


async def test_expiry_retries_after_a_database_error(autojump_clock, nursery, presence_settings):
    store = MemoryPresenceStore(1)
    tracker = await _start(nursery, store, presence_settings)
    store.failures_left = 1
    with trio.fail_after(100):
        reported = await _report(tracker, store, 1)
        await trio.sleep_until(reported + OFFLINE_AFTER + FAILURE_PAUSE + 2 * RESOLUTION)
    [went_offline] = store.offline_times(1)
    assert went_offline <= reported + OFFLINE_AFTER + FAILURE_PAUSE + 2 * RESOLUTION
    assert tracker.statements == 1


async def test_after_a_database_outage_sensors_get_a_report_through_before_going_offline(
    autojump_clock, nursery, presence_settings
):
    """While the database was away the writer committed nothing, so every sensor's last
    report aged: expiring as soon as it came back marked offline the sensors still reporting."""
    store = MemoryPresenceStore(2)
    tracker = await _start(nursery, store, presence_settings)
    with trio.fail_after(1000):
        reported = await _report(tracker, store, 1, 2)
        store.failures_left = 10**9  # the database goes away: every statement fails
        await trio.sleep_until(reported + 2 * OFFLINE_AFTER)
        store.failures_left = 0  # it is back
        await trio.sleep(2 * RESOLUTION)
        await _report(tracker, store, 1)  # sensor 1's first report that gets through
        await trio.sleep_until(reported + 3 * OFFLINE_AFTER)
    assert store.offline_times(1) == []
    [went_offline] = store.offline_times(2)  # the silent one, once the hold is over
    assert reported + 2 * OFFLINE_AFTER < went_offline <= reported + 3 * OFFLINE_AFTER
    assert tracker.held_until <= went_offline


async def test_a_sensor_whose_row_is_held_goes_offline_a_resolution_after_it_is_free(
    autojump_clock, nursery, presence_settings
):
    """Another transaction holds a due sensor's row (an operator's open `psql`): each expiry
    skips it and it is tried again a resolution later, so it goes offline within a resolution
    once the row is free, not at the next sweep; the sensor beside it goes offline on time."""
    store = MemoryPresenceStore(2)
    tracker = await _start(nursery, store, presence_settings)
    with trio.fail_after(1000):
        reported = await _report(tracker, store, 1, 2)
        store.held.add(1)
        freed = reported + OFFLINE_AFTER + 10 * RESOLUTION
        await trio.sleep_until(freed)
        assert store.rows[1].online
        store.held.clear()
        await trio.sleep_until(freed + 2 * RESOLUTION)
    [went_offline] = store.offline_times(1)
    assert freed <= went_offline <= freed + RESOLUTION
    [beside] = store.offline_times(2)
    assert beside <= reported + OFFLINE_AFTER + RESOLUTION


async def test_an_expiry_whose_reply_was_lost_is_still_published(
    autojump_clock, nursery, presence_settings
):
    """The statement committed and its connection broke before the answer: the retry finds
    the sensor offline already, and used to tell no live view."""
    store = MemoryPresenceStore(1)
    hub = Hub()
    tracker = await _start(nursery, store, presence_settings, hub)
    store.lost_replies = 1
    with hub.subscribe() as sub, trio.fail_after(100):
        await _report(tracker, store, 1)
        await sub.wait()
        [change] = sub.take()
    assert (change.id, change.status) == (1, "offline")
    assert len(store.offline_times(1)) == 1


async def test_old_events_are_pruned_at_start_in_small_batches(
    autojump_clock, nursery, presence_settings
):
    store = MemoryPresenceStore(1)
    await trio.sleep_until(10_000.0)
    store.events = [(1, "online", 0.0)] * (2 * PRUNE_BATCH + 1) + [(1, "online", 9_999.0)]
    await _start(nursery, store, presence_settings)
    with trio.fail_after(10):
        await trio.sleep_until(10_000.5)
    assert store.events == [(1, "online", 9_999.0)]
    assert store.prune_calls == 3
