"""Adding many sensors in one statement: the last step of `seed` and of provisioning.

Almost all the time of a large import was the INSERT maintaining the `sensor` table's indexes
(ten btrees and one or two trigram GIN indexes, half of it the GIN ones): a million rows
inserted one by one cost each index a million descents and GIN its pending-list merges, where
CREATE INDEX sorts once and writes every page once. So when an insert adds at least as many
sensors as the table holds (an empty fleet, the first provisioning, seeding) and at least
`REBUILD_MIN`, the indexes but the primary key's are dropped and built again around it, inside
the caller's transaction: all or nothing still holds, and no other session ever sees the table
without them. All but the search indexes (GIN): those are listed in `deferred_index` in the
same transaction and built after the commit with CREATE INDEX CONCURRENTLY (`build_deferred`,
which a daemon runs: search_index.py), since they took as long as the rest of the import; until
then a search reads every sensor (correct, ~0.2-0.5 s a search at a million).

What it costs: the rebuild locks the table ACCESS EXCLUSIVE until the transaction ends, so a
running daemon's writer and its listings wait for the insert and the builds: most of the
import's time (~28 s at a million on a slow two-core machine; with the trigram index, ~25 s of
CPU per million UUID-like serials with labels, it came near the daemon's 30 s statement
timeout before that index left the transaction; README, Benchmarks). It is taken only when the
insert at least doubles the fleet, so the wait grows with the import, not with the fleet a
small import joins: a fleet larger than the import is never locked. If the lock is not granted
within `LOCK_WAIT` (a long listing holds the table), the insert goes row by row instead of
queueing every other session behind it.

An empty fleet's first large import or seeding goes further (`fill`): its rows are copied
straight into `sensor` as they are read, with no staged copy, while the indexes are dropped.
`INSERT … SELECT` writes a row at a time (a WAL record and a buffer lookup each); COPY fills
pages at once, and the server stores while the client is still reading the file. The heap is
then in the file's order rather than the serial's. The table is taken before the first row is
read, so this is for rows read at disk speed (a file, generated serials), not a pipe whose
writer could hold every other session waiting. A file refused for a broken row is refused
before any index is built, one with a repeated serial when the serial's constraint (built
first) fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from .pool import Connection, connect, is_outage

STORING: Final = "storing and indexing"  # a progress bar's text once every row is read
REBUILD_MIN: Final = 20_000  # new sensors; below this inserting them one by one is as fast
LOCK_WAIT: Final = "1s"  # to take the table for a rebuild, else insert row by row
# Sorting and grouping a million staged rows in memory rather than in runs on disk (the
# default is 4 MB).
SORT_MEMORY: Final = "256MB"
# Building a GIN index of a million sensors' trigrams in one pass wants its entries in memory
# (the default 64 MB spills them to disk in runs, merged afterwards).
BUILD_MEMORY: Final = "512MB"

# What a rebuild drops and builds again: every index of `sensor` and of its search rows
# (`sensor_search`, which a trigger fills) but `sensor`'s primary key (ids are appended to in
# order anyway), the serial's unique constraint included (its sorted build is ~3x cheaper
# than a million probes and insertions; the insert's anti-join then hashes the stored serials).
# The search rows' primary key too: their insert by the trigger took 1.2-3.0 s at a million
# with it, 0.55 s without and 0.27 s to build it after (PostgreSQL 15). The search indexes
# (GIN) are `deferred`: built after the commit, see `_defer`.
# The unique constraint is built first: a repeated serial (`built`) fails before the rest.
_SECONDARY: Final = """
SELECT name, drop, build, deferred FROM (
    SELECT conname AS name,
           format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop,
           format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
                  pg_get_constraintdef(oid)) AS build,
           false AS deferred, CASE contype WHEN 'u' THEN 0 ELSE 1 END AS rank
    FROM pg_constraint
    WHERE (conrelid = 'sensor'::regclass AND contype = 'u')
       OR (conrelid = 'sensor_search'::regclass AND contype = 'p')
    UNION ALL
    SELECT format('%I', c.relname), format('DROP INDEX %I', c.relname),
           pg_get_indexdef(i.indexrelid), a.amname = 'gin', 2
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
    WHERE i.indrelid IN ('sensor'::regclass, 'sensor_search'::regclass)
      AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
) secondary ORDER BY rank, name
"""

# Sensors the table holds, from the counters the triggers maintain (no scan).
_SENSORS: Final = (
    "SELECT (SELECT coalesce(sum(n), 0) FROM fleet_count) + (SELECT n FROM retired_count)"
)

_ANY: Final = "SELECT EXISTS (SELECT FROM sensor)"  # retired sensors too

_UNSTORED: Final = "NOT EXISTS (SELECT FROM sensor s WHERE s.serial = i.serial)"
# Staged rows in serial order: the serial index is appended to instead of descended at random,
# and the heap is in the order listings read it.
_INSERT: Final = "INSERT INTO sensor ({columns}) SELECT {columns} FROM {source} i {rest}"
_CONFLICT: Final = "ORDER BY serial ON CONFLICT (serial) DO NOTHING"
# With the table locked no other session can add a serial meanwhile, so a plain anti-join
# serves (and must: the unique index ON CONFLICT names is dropped for the insert).
_LOCKED: Final = f"WHERE {_UNSTORED} ORDER BY serial"


def statement(source: str, columns: str) -> str:
    """INSERT INTO sensor (`columns`) the rows of the table `source` that are not stored yet,
    safe beside concurrent writers."""
    return _INSERT.format(columns=columns, source=source, rest=_CONFLICT)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def begin(conn: Connection) -> None:
    """Settings for the rest of a bulk transaction, before its staged rows are checked and
    inserted: sorts and groupings of a million rows in memory, and a commit that does not
    wait for its WAL flush (`synchronous_commit` off: a crash just after the commit loses the
    whole import, never part of it, and running it again does it again; seeding and imports
    are idempotent)."""
    await conn.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
    await conn.execute("SET LOCAL synchronous_commit = off")


async def insert(conn: Connection, source: str, columns: str) -> int:
    """Insert into the sensor table the rows of the table `source` (`columns`, serial among
    them) that are not stored yet, in the caller's transaction, rebuilding the secondary
    indexes around it when that is faster. Returns the rows it inserted."""
    if not await _worth_rebuilding(conn, source) or not await _lock(conn):
        return _count(await conn.execute(statement(source, columns)))
    indexes = await _drop_secondary(conn)
    inserted = _count(
        await conn.execute(_INSERT.format(columns=columns, source=source, rest=_LOCKED))
    )
    await _build(conn, indexes)
    return inserted


@dataclass(frozen=True, slots=True)
class Filling:
    """Rows `fill` copied, the table's secondary indexes dropped until `built`."""

    copied: int
    indexes: list[asyncpg.Record]


async def fill(
    conn: Connection, columns: Sequence[str], records: Iterable[Sequence[object]]
) -> Filling | None:
    """Copy `records` (`columns` of new sensors) straight into the sensor table if it is
    empty, in the caller's transaction, its secondary indexes dropped: the caller checks the
    rows, then has them `built` (or rolls back). None, with `records` not read, when the table
    holds any sensor or cannot be taken within `LOCK_WAIT` (`insert` then: after the staging
    it asks again, the holder may be gone by then).

    It checks nothing of a row: the caller vets each as it reads it, and the serial's
    uniqueness is found by `built`.
    """
    if not await _lock(conn, empty=True):
        return None
    indexes = await _drop_secondary(conn)
    copied = _count(
        await conn.copy_records_to_table("sensor", columns=list(columns), records=records)
    )
    return Filling(copied, indexes)


async def built(conn: Connection, filling: Filling) -> bool:
    """Build the indexes `fill` dropped, the serial's unique constraint first; False when two
    copied rows name one serial, the rows left as they were (unindexed) for the caller to find
    which before it rolls back."""
    try:
        async with conn.transaction():  # a savepoint: the rows stay
            await _build(conn, filling.indexes)
    except asyncpg.UniqueViolationError:
        return False
    return True


async def _drop_secondary(conn: Connection) -> list[asyncpg.Record]:
    """Drop the indexes a large insert builds again afterwards; what `_build` needs for it."""
    indexes = await conn.fetch(_SECONDARY)
    for index in indexes:
        await conn.execute(index["drop"])
    return indexes


async def _build(conn: Connection, indexes: list[asyncpg.Record]) -> None:
    """Build the dropped `indexes` again, the search indexes after the commit (`_defer`)."""
    await conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
    for index in indexes:
        if index["deferred"]:
            await _defer(conn, index["name"], index["build"])
        else:
            await conn.execute(index["build"])


async def _defer(conn: Connection, name: str, build: str) -> None:
    """Leave an index to be built after the commit (search_index.py): a search index takes as
    long to build as the rest of a large insert together (a GIN of trigrams: ~40 keys a
    sensor), and searches are correct without it, only slower, until it is there."""
    await conn.execute(
        "INSERT INTO deferred_index (name, build) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET build = excluded.build, deferred_at = now()",
        name,
        build,
    )


async def _worth_rebuilding(conn: Connection, source: str) -> bool:
    """Whether the insert adds at least `REBUILD_MIN` sensors and at least as many as there
    are (counted exactly only when the staged rows alone could be that many)."""
    staged = await conn.fetchval(f"SELECT count(*) FROM {source}")
    stored = await conn.fetchval(_SENSORS)
    if staged < max(REBUILD_MIN, stored):
        return False
    new = await conn.fetchval(f"SELECT count(*) FROM {source} i WHERE {_UNSTORED}")
    return bool(new >= max(REBUILD_MIN, stored))


class _NotEmpty(Exception):
    """The table holds sensors (`_lock` with `empty`): the savepoint and its lock are undone."""


async def _lock(conn: Connection, *, empty: bool = False) -> bool:
    """Take the table for a rebuild unless another session holds it past `LOCK_WAIT`, or
    wants it too: two large imports at once each hold the share lock of their checks, so each
    waits for the other and PostgreSQL fails one as a deadlock; that one inserts row by row
    once the other has committed. With `empty`, only a table without sensors is taken (looked
    at before asking, and again once it is held)."""
    if empty and await conn.fetchval(_ANY):
        return False
    try:
        async with conn.transaction():  # a savepoint: a failure leaves the caller's work be
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
            await conn.execute("LOCK TABLE sensor, sensor_search IN ACCESS EXCLUSIVE MODE")
            if empty and await conn.fetchval(_ANY):
                raise _NotEmpty  # undoing the savepoint releases the lock taken in it
    except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError, _NotEmpty):
        return False
    await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
    return True


# One builder at a time, across daemons and processes: a session lock (CONCURRENTLY cannot run
# in a transaction), released with the builder's connection.
_BUILD_LOCK: Final = 0x64735F696E6478  # "ds_indx"


async def deferred(conn: Connection) -> bool:
    """Whether an index waits to be built."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT FROM deferred_index)"))


async def build_deferred(dsn: str) -> list[str]:
    """Build the indexes an insert deferred, one at a time, each without blocking writes to the
    table (CONCURRENTLY), on a connection of its own without statement or lock timeouts (a
    build of a million sensors' trigrams takes tens of seconds, and waits for transactions
    older than it to end); the names built (none when another session is building them). Must
    run inside a trio-asyncio loop.

    An index of the listed name that is there already is invalid when a build was interrupted
    (a stopped daemon: it is dropped and built again), valid when one finished but its row was
    not deleted. A row deferred again meanwhile (another import) is left for the next build.

    Raises:
        The first error of a build that failed, once the others are built (an outage at once).
    """
    async with connect(dsn) as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _BUILD_LOCK):
            return []
        await conn.execute(
            f"SET maintenance_work_mem = '{BUILD_MEMORY}'; "
            "SET statement_timeout = 0; SET lock_timeout = 0"
        )
        built: list[str] = []
        failed: Exception | None = None
        for row in await conn.fetch(_DEFERRED):
            name, build = row["name"], row["build"]
            try:
                if not row["valid"]:
                    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                    await conn.execute(
                        build.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1)
                    )
                    built.append(name)
                await conn.execute(
                    "DELETE FROM deferred_index WHERE name = $1 AND deferred_at = $2",
                    name,
                    row["deferred_at"],
                )
            except Exception as exc:  # the others are built all the same; this one is raised
                if is_outage(exc):
                    raise
                failed = failed or exc
        if failed is not None:
            raise failed
        if built:
            # The search's planning reads the trigram index's statistics (db/sensors.py), which
            # an analyze gathers only once the index exists; autovacuum's, after the import,
            # may have run before.
            await conn.execute("ANALYZE sensor, sensor_search")
        return built


_DEFERRED: Final = """
SELECT d.name, d.build, d.deferred_at, coalesce(i.indisvalid, false) AS valid
FROM deferred_index d LEFT JOIN pg_index i ON i.indexrelid = to_regclass(d.name)
ORDER BY d.name
"""
