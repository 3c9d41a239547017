"""Search indexes a large import leaves to build after its commit (db/bulk.py): a running daemon
builds them CONCURRENTLY (search_index.py) while searches, correct meanwhile, read every sensor;
a build that was interrupted leaves an invalid index, which the next build replaces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from droneshield.db import bulk, seed
from droneshield.db import sensors as db_sensors
from droneshield.db.pool import Connection, connect

from .support.locks import an_index_build_waits
from .support.processes import eventually

FLEET = bulk.REBUILD_MIN  # the smallest insert that rebuilds indexes (and defers the search's)
SEARCH = "/sensors?q=0001234&limit=5"  # DS-00012340 … DS-00012349 hold it, and DS-00001234


@asynccontextmanager
async def an_old_snapshot(database_url: str) -> AsyncIterator[None]:
    """A transaction holding a snapshot: CREATE INDEX CONCURRENTLY waits for it to end."""
    async with connect(database_url) as conn, conn.transaction(isolation="repeatable_read"):
        await conn.fetchval("SELECT count(*) FROM software")
        yield


async def _deferred(db: Connection) -> list[str]:
    return list(await db.fetchval("SELECT coalesce(array_agg(name), '{}') FROM deferred_index"))


async def _valid_search_indexes(db: Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = 'sensor_search'::regclass AND a.amname = 'gin' AND i.indisvalid"
        )
    )


async def test_a_daemon_builds_the_index_an_import_left_and_searches_answer_meanwhile(
    api: httpx.AsyncClient, db, database_url
):
    with trio.fail_after(60):
        async with an_old_snapshot(database_url):
            assert await seed.seed(db, FLEET) == FLEET
            searching = await _deferred(db)
            assert searching
            assert await _valid_search_indexes(db) == 0
            await eventually(lambda: an_index_build_waits(db))  # the daemon's
            meanwhile = await api.get(SEARCH)
        await eventually(lambda: _done(db))
        built = await api.get(SEARCH)
    assert meanwhile.status_code == built.status_code == 200, meanwhile.text
    serials = [item["serial"] for item in built.json()["items"]]
    assert serials == ["DS-00001234", *(f"DS-0001234{n}" for n in range(4))]
    assert [item["serial"] for item in meanwhile.json()["items"]] == serials
    assert meanwhile.json()["total"] == built.json()["total"] == 11
    assert await _valid_search_indexes(db) == len(searching)


async def _done(db: Connection) -> bool:
    return not await _deferred(db)


async def _invalid_indexes(db: Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_index "
            "WHERE indrelid = 'sensor_search'::regclass AND NOT indisvalid"
        )
    )


async def test_a_build_cancelled_as_a_daemon_stops_leaves_an_invalid_index_the_next_replaces(
    aio_loop, db, database_url
):
    await seed.seed(db, FLEET)
    names = await _deferred(db)
    with trio.fail_after(60):
        async with an_old_snapshot(database_url), trio.open_nursery() as nursery:
            nursery.start_soon(bulk.build_deferred, database_url)
            await eventually(lambda: an_index_build_waits(db))
            nursery.cancel_scope.cancel()
        assert await _invalid_indexes(db) == 1
        assert await _deferred(db) == names
        assert not await db_sensors.has_grams(db)  # searches do not ask for the trigrams
        assert sorted(await bulk.build_deferred(database_url)) == sorted(names)
    assert await _deferred(db) == []
    assert await _valid_search_indexes(db) == len(names)
    assert await _invalid_indexes(db) == 0


async def test_an_index_built_whose_row_was_left_is_kept(aio_loop, db, database_url):
    await seed.seed(db, FLEET)
    [name, *_] = names = await _deferred(db)
    await bulk.build_deferred(database_url)
    built = await db.fetchval("SELECT to_regclass($1)::oid::bigint", name)
    # A build that finished without deleting its row (stopped between the two).
    await db.execute(
        "INSERT INTO deferred_index (name, build) SELECT $1, pg_get_indexdef(to_regclass($1))",
        name,
    )
    assert await bulk.build_deferred(database_url) == []  # nothing to build
    assert await db.fetchval("SELECT to_regclass($1)::oid::bigint", name) == built
    assert await _deferred(db) == []
    assert len(names) == await _valid_search_indexes(db)


async def test_an_index_deferred_again_during_its_build_stays_listed(aio_loop, db, database_url):
    """Another import dropped the index again and listed it once more while it was built: the
    build does not delete that newer row, so the index is built again, not forgotten."""
    await seed.seed(db, FLEET)
    names = await _deferred(db)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async with an_old_snapshot(database_url):
                nursery.start_soon(bulk.build_deferred, database_url)
                await eventually(lambda: an_index_build_waits(db))
                await db.execute("UPDATE deferred_index SET deferred_at = clock_timestamp()")
    assert await _deferred(db) == names


async def test_a_build_that_fails_for_good_is_logged_the_others_built_and_the_daemon_serves_on(
    api: httpx.AsyncClient, db, caplog
):
    await seed.seed(db, FLEET)
    searching = await _deferred(db)
    # A statement no retry mends (as a role without the right to create indexes would get),
    # listed before the search indexes.
    await db.execute(
        "INSERT INTO deferred_index (name, build) "
        "VALUES ('a_broken', 'CREATE INDEX a_broken ON no_such_table (x)')"
    )
    with trio.fail_after(30):
        await eventually(lambda: _logged(caplog, "building the search index failed"))
        ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert await _deferred(db) == ["a_broken"]  # tried again later
    assert await _valid_search_indexes(db) == len(searching)


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)
