"""Presence on real PostgreSQL and the real clock: the conditional update, the race with a report,
restart recovery, the sweep, pruning, and one event per transition."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import presence, seed
from droneshield.db.pool import connect, is_transient, open_pool
from droneshield.db.presence import PresenceDb
from droneshield.db.reports import apply_reports
from droneshield.domain import SensorState
from droneshield.hub import Hub, Subscription
from droneshield.ingest.proto.status import DeviceStatus
from droneshield.presence import Tracker

from .support.grpc_clients import aio, grpclib_stub

OFFLINE_AFTER = 1.0
RESOLUTION = 0.1
SWEEP_INTERVAL = 0.3  # seconds, for the sweep's own test


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No sweep: whatever goes offline here was expired by the wheel. How late, on a loaded
    machine, is a benchmark's question (`tests/bench/bench_presence.py`); never early is a
    test's."""
    return settings.replace(
        offline_after=OFFLINE_AFTER, wheel_resolution=RESOLUTION, sweep_interval=3600.0
    )


async def _ids(db, serials: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    rows = await db.fetch("SELECT id FROM sensor WHERE serial = ANY($1) ORDER BY id", serials)
    return [r["id"] for r in rows]


async def _set_online(db, serials: list[str], silent_for: float) -> None:  # type: ignore[no-untyped-def]
    """Rows as another instance (or an earlier run) left them: online, last heard of then."""
    await db.execute(
        "UPDATE sensor SET (online, last_seen_at, status_changed_at) = "
        "(true, now() - $2::interval, now() - $2::interval) WHERE serial = ANY($1)",
        serials,
        timedelta(seconds=silent_for),
    )


async def _events(db, serial: str) -> list[tuple[str, str | None, str | None]]:  # type: ignore[no-untyped-def]
    rows = await db.fetch(
        "SELECT kind, old, new FROM sensor_event e JOIN sensor s ON s.id = e.sensor_id "
        "WHERE s.serial = $1 ORDER BY e.id",
        serial,
    )
    return [(r["kind"], r["old"], r["new"]) for r in rows]


async def _status(db, serial: str) -> str:  # type: ignore[no-untyped-def]
    return await db.fetchval(
        "SELECT sensor_status(online, last_seen_at) FROM sensor WHERE serial = $1", serial
    )


async def _poll_until(db, query: str, *args: object, bound: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Until `query` returns true, polling the database (bounded): the database is the only
    witness of another process's commit, so there is no event to wait on."""
    with trio.fail_after(bound):
        while not await db.fetchval(query, *args):  # noqa: ASYNC110
            await trio.sleep(0.02)


async def _silence(db, serial: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds between a sensor's last report and its going offline (by the database)."""
    return await db.fetchval(
        "SELECT extract(epoch FROM status_changed_at - last_seen_at)::float8 "
        "FROM sensor WHERE serial = $1",
        serial,
    )


async def test_expire_marks_offline_only_sensors_online_and_silent_for_offline_after(db, sensors):
    await _set_online(db, sensors[0:1], silent_for=60)
    await _set_online(db, sensors[1:2], silent_for=5)
    await _set_online(db, sensors[3:4], silent_for=100)
    await db.execute("UPDATE sensor SET online = false WHERE serial = $1", sensors[3])
    ids = await _ids(db, sensors[:4])  # sensors[2] never reported

    expiry = await presence.expire(db, ids, 30.0)

    assert [r.serial for r in expiry.offline] == [sensors[0]]
    [(still_id, age)] = expiry.still_online
    assert still_id == ids[1]
    assert 5 <= age < 6
    assert [await _status(db, s) for s in sensors[:4]] == ["offline", "online", "never", "offline"]
    assert await _events(db, sensors[0]) == [("offline", "online", "offline")]
    assert (await presence.expire(db, ids, 30.0)).offline == []
    assert await _events(db, sensors[0]) == [("offline", "online", "offline")]
    totals = dict(await db.fetch("SELECT status, sum(n)::int FROM fleet_count GROUP BY status"))
    assert totals == {"never": 7, "online": 1, "offline": 2}


async def test_report_committed_by_another_connection_before_the_update_keeps_it_online(
    db, database_url, sensors
):
    await _set_online(db, sensors[:1], silent_for=60)  # the wheel finds it due …
    [sensor_id] = await _ids(db, sensors[:1])
    async with connect(database_url) as other:  # … another instance commits a report …
        await apply_reports(other, sensors[:1], [None])
    expiry = await presence.expire(db, [sensor_id], 30.0)  # … then the update runs
    assert expiry.offline == []
    assert await _status(db, sensors[0]) == "online"
    assert await _events(db, sensors[0]) == []


async def test_a_row_another_transaction_holds_is_skipped_not_waited_for(db, database_url, sensors):
    """A report being committed, or an operator's open transaction, holds one due sensor's row:
    the expiry takes the others offline at once and answers that one as held (the tracker
    tries it again a resolution later). It waited for the row before: an operator's
    transaction held every sensor's offline with it."""
    await _set_online(db, sensors[:2], silent_for=60)
    held, free = await _ids(db, sensors[:2])
    async with connect(database_url) as other, other.transaction():
        await apply_reports(other, sensors[:1], [None])  # row locked, not committed
        with trio.fail_after(10):
            expiry = await presence.expire(db, [held, free], 30.0)
    assert [s.id for s in expiry.offline] == [free]
    assert expiry.still_online == []
    assert expiry.held == [held]  # tried again a resolution later
    assert await _status(db, sensors[0]) == "online"  # the report committed
    assert await _events(db, sensors[0]) == []


async def test_expiry_racing_a_webhook_removal_fails_in_a_way_it_retries(db, database_url, sensors):
    """The statement read a webhook, then the foreign-key check of the alert it queued waited
    for the webhook's removal and found it gone. That error once ended the expiry loop, and
    with it the daemon; it is retried (`is_transient`), and the retry queues no alert."""
    await _set_online(db, sensors[:1], silent_for=60)
    [sensor_id] = await _ids(db, sensors[:1])
    webhook = await db.fetchval(
        "INSERT INTO webhook (url, events, secret) "
        "VALUES ('http://127.0.0.1:9/', '{sensor.offline}', 'secret') RETURNING id"
    )
    failures: list[Exception] = []
    async with connect(database_url) as other, connect(database_url) as watcher:
        async with trio.open_nursery() as nursery, other.transaction():
            await other.execute("DELETE FROM webhook WHERE id = $1", webhook)

            async def expire() -> None:
                try:
                    await presence.expire(db, [sensor_id], 30.0)
                except Exception as exc:
                    failures.append(exc)

            nursery.start_soon(expire)
            await _poll_until(
                watcher,
                "SELECT count(*) > 0 FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
        # The removal committed as the transaction closed; then the check found no webhook.
    [failure] = failures
    assert is_transient(failure), failure
    assert len((await presence.expire(db, [sensor_id], 30.0)).offline) == 1
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_two_instances_expiring_one_sensor_record_a_single_event(db, database_url, sensors):
    await _set_online(db, sensors[:1], silent_for=60)
    ids = await _ids(db, sensors[:1])
    results = []

    async def expire_on(conn) -> None:  # type: ignore[no-untyped-def]
        results.append(await presence.expire(conn, ids, 30.0))

    async with connect(database_url) as other, trio.open_nursery() as nursery:
        nursery.start_soon(expire_on, db)
        nursery.start_soon(expire_on, other)
    assert sorted(len(r.offline) for r in results) == [0, 1]
    assert await _events(db, sensors[0]) == [("offline", "online", "offline")]


async def _next_offline(sub: Subscription) -> SensorState:
    while True:
        await sub.wait()
        offline = [c for c in sub.take() if c.status == "offline"]
        if offline:
            return offline[0]


async def test_sensor_is_never_until_its_first_report_then_one_event_per_transition(
    running, db, sensors
):
    assert {await _status(db, s) for s in sensors} == {"never"}
    with running.hub.subscribe([sensors[0]]) as sub, trio.fail_after(10):
        async with grpclib_stub(running.grpc_port) as stub:
            status = DeviceStatus(serial=sensors[0], software_version="1.0.0")
            await aio(stub.send_status, status)
            assert await _status(db, sensors[0]) == "online"
            went_offline = await _next_offline(sub)
            assert await _status(db, sensors[0]) == "offline"
            silence = await _silence(db, sensors[0])
            await aio(stub.send_status, status)
    assert silence >= OFFLINE_AFTER
    assert went_offline.serial == sensors[0]
    assert await _events(db, sensors[0]) == [
        ("online", "never", "online"),
        ("offline", "online", "offline"),
        ("online", "offline", "online"),
    ]
    assert {await _status(db, s) for s in sensors[1:]} == {"never"}


async def test_restart_expires_overdue_sensors_at_start_and_recent_ones_at_their_deadline(
    aio_loop, database_url, db, sensors, settings, nursery
):
    await _set_online(db, sensors[0:1], silent_for=3600)
    await _set_online(db, sensors[1:2], silent_for=0.5)
    running = await nursery.start(daemon.run, settings, database_url)  # no sweep: recovery
    await _poll_until(db, "SELECT NOT online FROM sensor WHERE serial = $1", sensors[0])
    await _poll_until(db, "SELECT NOT online FROM sensor WHERE serial = $1", sensors[1])
    assert await _silence(db, sensors[1]) >= OFFLINE_AFTER
    assert await _events(db, sensors[1]) == [("offline", "online", "offline")]
    assert await _status(db, sensors[2]) == "never"
    assert len(running.tracker.wheel) == 0


async def test_ten_thousand_staggered_sensors_expire_in_order_in_few_statements(
    aio_loop, database_url, db, settings, nursery
):
    count, offline_after = 10_000, 3.0
    await seed.seed(db, count)
    # Silent for 1.5 … 0.5 s: due 1.5 … 2.5 s from now, ~1,000 per tick.
    await db.execute(
        "UPDATE sensor SET online = true, last_seen_at = now() - make_interval(secs => "
        "1.5 - id::float8 / $1), status_changed_at = now()",
        count,
    )
    settings = settings.replace(offline_after=offline_after)
    running = await nursery.start(daemon.run, settings, database_url)
    await _poll_until(db, "SELECT NOT bool_or(online) FROM sensor", bound=10)
    rows = await db.fetch(
        "SELECT status_changed_at, "
        "extract(epoch FROM status_changed_at - last_seen_at)::float8 AS silence "
        "FROM sensor ORDER BY last_seen_at, id"
    )
    changed = [r["status_changed_at"] for r in rows]
    assert changed == sorted(changed), "expired out of order"
    assert min(r["silence"] for r in rows) >= offline_after
    # One statement per tick (plus one for any already overdue at start), not one per sensor.
    assert running.tracker.statements <= 12
    assert await db.fetchval("SELECT count(*) FROM sensor_event WHERE kind = 'offline'") == count


async def test_safety_sweep_marks_offline_sensors_no_instance_tracks(
    aio_loop, database_url, db, sensors, settings, nursery
):
    running = await nursery.start(
        daemon.run, settings.replace(sweep_interval=SWEEP_INTERVAL), database_url
    )
    await _set_online(db, sensors[:1], silent_for=10)  # its instance died
    assert sensors[0] not in running.tracker.wheel
    await _poll_until(db, "SELECT NOT online FROM sensor WHERE serial = $1", sensors[0])
    assert await _events(db, sensors[0]) == [("offline", "online", "offline")]


async def _start_pruning_after_a_day(
    nursery: trio.Nursery, settings: Settings, database_url: str
) -> None:
    """A daemon that keeps events (and versions never uploaded) a day; it prunes at start."""
    await nursery.start(daemon.run, settings.replace(event_retention=86400.0), database_url)


async def test_events_older_than_retention_are_pruned_in_the_background(
    aio_loop, database_url, db, sensors, settings, nursery
):
    [sensor_id] = await _ids(db, sensors[:1])
    await db.execute(
        "INSERT INTO sensor_event (sensor_id, at, kind) "
        "SELECT $1, now() - make_interval(days => 2, secs => n), 'online' "
        "FROM generate_series(1, 2500) AS n",
        sensor_id,
    )
    await db.execute("INSERT INTO sensor_event (sensor_id, kind) VALUES ($1, 'version')", sensor_id)
    # Versions never uploaded go too once nobody reported them for as long.
    await db.execute(
        "INSERT INTO unreleased_version (version, reports, first_seen_at, last_seen_at) "
        "SELECT v, 1, now() - interval '3 days', now() - make_interval(days => d) "
        "FROM unnest(ARRAY['8.0.0', '9.0.0'], ARRAY[2, 0]) AS t(v, d)"
    )
    await _start_pruning_after_a_day(nursery, settings, database_url)
    await _poll_until(db, "SELECT count(*) = 1 FROM sensor_event")
    assert await _events(db, sensors[0]) == [("version", None, None)]
    assert await db.fetchval("SELECT array_agg(version) FROM unreleased_version") == ["9.0.0"]


async def test_stale_unreleased_versions_are_pruned_in_full_without_old_events(
    aio_loop, database_url, db, sensors, settings, nursery
):
    """The pruning runs on while either table had a full batch to delete: counted by events
    alone, 1,000 stale versions went per hourly run however many there were."""
    await db.execute(
        "INSERT INTO unreleased_version (version, reports, first_seen_at, last_seen_at) "
        "SELECT '8.0.' || n, 1, now() - interval '3 days', now() - interval '2 days' "
        "FROM generate_series(1, 2500) AS n"
    )
    await _start_pruning_after_a_day(nursery, settings, database_url)
    await _poll_until(db, "SELECT count(*) = 0 FROM unreleased_version")


async def test_offline_states_are_read_for_the_offline_sensors_only(db, sensors):
    """What an expiry whose reply was lost left: offline sensors (not online, never seen or
    retired ones), as live views show them."""
    online, offline, never, retired = sensors[:4]
    await _set_online(db, [online, offline, retired], silent_for=100)
    await db.execute("UPDATE sensor SET online = false WHERE serial = ANY($1)", [offline, retired])
    await db.execute("UPDATE sensor SET retired_at = now() WHERE serial = $1", retired)
    states = await presence.offline_states(db, await _ids(db, [online, offline, never, retired]))
    assert [(s.serial, s.status) for s in states] == [(offline, "offline")]
    assert states[0].last_seen_at is not None


async def test_recovery_reads_online_sensors_a_page_at_a_time(aio_loop, database_url, db, sensors):
    await _set_online(db, sensors, silent_for=0.0)
    async with open_pool(database_url, size=1) as pool:
        tracker = Tracker(
            PresenceDb(pool),
            Hub(),
            offline_after=30.0,
            resolution=1.0,
            sweep_interval=60.0,
            event_retention=3600.0,
        )
        assert await tracker.recover(page=3) == len(sensors)
    assert len(tracker.wheel) == len(sensors)
    assert all(i in tracker.wheel for i in await _ids(db, sensors))


async def test_expiry_finds_its_sensors_by_id_when_statistics_say_none_is_online(db):
    """Statistics gathered while the fleet was silent (ANALYZE with every sensor offline), then
    the fleet back online: the expiry still reads its sensors by id, not every online sensor
    through the index on `online`, and marks them offline."""
    await seed.seed(db, 3000)
    # Statistics of the silent fleet only: no autovacuum analyzing the table again meanwhile.
    await db.execute("ALTER TABLE sensor SET (autovacuum_enabled = off)")
    await db.execute("ANALYZE sensor")
    await db.execute(
        "UPDATE sensor SET online = true, last_seen_at = now() - interval '1 minute', "
        "status_changed_at = now()"
    )
    ids = [r["id"] for r in await db.fetch("SELECT id FROM sensor WHERE id % 20 = 0 ORDER BY id")]
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            f"EXPLAIN (COSTS OFF) {presence._EXPIRE}", ids, timedelta(seconds=30)
        )
    )
    assert "sensor_online_serial" not in plan, plan
    assert "sensor_pkey" in plan, plan
    expiry = await presence.expire(db, ids, 30.0)
    assert sorted(r.id for r in expiry.offline) == ids
