"""Migrations, seeding, and what the writer does when the database goes away."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import pytest
import trio
from grpclib import GRPCError, Status

from droneshield.db import bulk, migrate, reports, seed
from droneshield.db.pool import connect

from .support import sensor_table
from .support.grpc_clients import send
from .support.releases import add_software


async def test_migrations_apply_once_even_when_started_together(aio_loop, empty_database_url):
    applied: list[list[str]] = []

    async def one() -> None:
        async with connect(empty_database_url) as conn:
            applied.append(await migrate.migrate(conn))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        async with connect(empty_database_url) as conn:
            assert await migrate.pending(conn) == []
            ledger = await conn.fetch("SELECT version FROM schema_migration")
    names = [n for batch in applied for n in batch]
    assert sorted(names) == sorted(p.name for _, p in migrate.migration_files())
    assert len(ledger) == len(names)


@pytest.mark.parametrize(
    ("serial", "stored"),
    [
        ("x" * 128, True),
        ("DS 42 ~!", True),
        ("", False),
        ("x" * 129, False),
        ("DS-\x01", False),
        ("DS-\x7f", False),
        ("DS-é", False),
    ],
)
async def test_the_database_keeps_serials_to_the_wire_contract(db, serial, stored):
    """The contract (1-128 printable ASCII) holds even for rows written around the daemon."""
    try:
        await db.execute("INSERT INTO sensor (serial) VALUES ($1)", serial)
    except asyncpg.CheckViolationError:
        assert not stored
    else:
        assert stored


async def test_seed_is_idempotent_and_uses_the_documented_serial_format(db):
    with trio.fail_after(30):
        assert await seed.seed(db, 1000) == 1000
        assert await seed.seed(db, 1000) == 0
        assert await seed.seed(db, 1200) == 200
    assert await db.fetchval("SELECT count(*) FROM sensor") == 1200
    assert await db.fetchval("SELECT min(serial) FROM sensor") == "DS-00000001"
    assert await db.fetchval("SELECT max(serial) FROM sensor") == "DS-00001200"
    counts = await db.fetch("SELECT status, n FROM fleet_count WHERE n <> 0")
    assert [tuple(r) for r in counts] == [("never", 1200)]


async def test_seeding_an_empty_fleet_builds_its_indexes_once_and_keeps_counters(db, database_url):
    """The fast path of a large insert (bulk.py): the secondary indexes are built again after
    it (the search indexes after its commit, as a daemon builds them), the same indexes,
    usable by the planner, with the counters exact."""
    before = await sensor_table.indexes(db)
    with trio.fail_after(60):
        assert await seed.seed(db, bulk.REBUILD_MIN) == bulk.REBUILD_MIN
        searching = sensor_table.search_indexes(before)
        assert set(before) - set(await sensor_table.indexes(db)) == searching
        assert sorted(await bulk.build_deferred(database_url)) == sorted(searching)
    after = await sensor_table.indexes(db)
    assert sensor_table.rebuilt(before, after) == set(before) - sensor_table.KEPT
    await sensor_table.assert_counters_exact(db)
    for index, query in sensor_table.lookups(after):
        assert index in await sensor_table.plan(db, query)
    with trio.fail_after(60):
        assert await seed.seed(db, bulk.REBUILD_MIN) == 0
    assert sensor_table.rebuilt(after, await sensor_table.indexes(db)) == set()


async def test_a_large_seed_waits_no_longer_than_a_second_for_a_reader(db, database_url):
    """A session reading the table (a listing) would make the rebuild's lock queue every other
    session behind it: past LOCK_WAIT (a second, asked for before the copy into the empty
    table and again before the staged insert) the rows are inserted one by one instead."""
    before = await sensor_table.indexes(db)
    async with connect(database_url) as reader, reader.transaction():
        await reader.fetchval("SELECT count(*) FROM sensor")  # holds its lock until the end
        with trio.fail_after(60):
            assert await seed.seed(db, bulk.REBUILD_MIN) == bulk.REBUILD_MIN
    assert sensor_table.rebuilt(before, await sensor_table.indexes(db)) == set()
    await sensor_table.assert_counters_exact(db)


@pytest.fixture
def settings(settings):
    return settings.replace(ack_timeout=1.0)


async def test_database_outage_answers_unavailable_then_recovers(
    running, server_url, database_url, sensors
):
    name = urlsplit(database_url).path.lstrip("/")
    with trio.fail_after(30):
        await send(running.grpc_port, sensors[0])
        async with connect(server_url) as admin:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            with pytest.raises(GRPCError) as caught:
                await send(running.grpc_port, sensors[1])
            assert caught.value.status is Status.UNAVAILABLE
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        ack = await send(running.grpc_port, sensors[2])
    assert ack.message.startswith("online")
    async with connect(database_url) as conn:
        assert await conn.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[2])


async def test_the_stored_version_key_follows_every_write_of_a_version(db):
    """`sort=version` reads `version_key` (migration 0016), which the batch statement copies
    from the release: it must be the key of the stored version after reports and a release's
    removal (ON DELETE SET NULL), in semver precedence; a write of one without the other is
    refused."""
    versions = ["1.10.0", "1.2.0", "2.0.0-rc.1", "2.0.0"]
    await add_software(db, *versions, "9.0.0")
    await seed.seed(db, 7)
    serials = [seed.serial_for(n) for n in range(1, 7)]
    await reports.apply_reports(db, serials, [*versions, "9.0.0", "1.2.0"])
    await reports.apply_reports(db, serials[:1], ["2.0.0"])  # a version changes
    await db.execute("DELETE FROM software WHERE version = '9.0.0'")
    rows = await db.fetch(
        "SELECT serial, version, version_key, coalesce(version_sort_key(version), '') AS want "
        "FROM sensor ORDER BY version_key, serial"
    )
    assert [(r["serial"], r["version_key"]) for r in rows] == [
        (r["serial"], r["want"]) for r in rows
    ]
    assert [r["version"] for r in rows] == [
        None,
        None,
        "1.2.0",
        "1.2.0",
        "2.0.0-rc.1",
        "2.0.0",
        "2.0.0",
    ]
    for assignment, serial in (("version = '1.2.0'", serials[4]), ("version = NULL", serials[0])):
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(f"UPDATE sensor SET {assignment} WHERE serial = $1", serial)


async def test_a_seen_sensor_without_a_status_change_or_an_unseen_one_with_one_is_refused(
    db,
):
    """Listings take the never-seen sensors' range of a key for them on these facts
    (migrations 0016 and 0024)."""
    await add_software(db, "1.0.0")
    await seed.seed(db, 1)
    for assignment in (
        "last_seen_at = now()",
        "status_changed_at = now()",
        "version = '1.0.0', version_key = (SELECT version_key FROM software)",
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(f"UPDATE sensor SET {assignment}")


async def test_the_outbox_trigger_of_an_unreleased_0020_is_dropped(db):
    """A database migrated while 0020 NOTIFYed from the outbox keeps no trigger there."""
    await db.execute(
        "CREATE FUNCTION outbox_queued() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_notify('droneshield_outbox', ''); RETURN NULL; END $$; "
        "CREATE TRIGGER outbox_queued AFTER INSERT ON outbox REFERENCING NEW TABLE AS queued "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_queued(); "
        "DELETE FROM schema_migration WHERE version = 22"
    )
    assert await migrate.migrate(db) == ["0022_no_outbox_notify.sql"]
    triggers = await db.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal"
    )
    assert triggers == 0
    assert await db.fetchval("SELECT to_regproc('outbox_queued')") is None
