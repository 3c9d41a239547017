"""Sessions waiting for a lock: how a test knows the statement it started has reached the row
or table it holds (only the database sees that, so it is polled), and how it makes that
statement fail as a cancelled one does. A daemon's background index build (search_index.py,
after a large seed) waits for other transactions too: it is told apart, never counted among
the statements a test is waiting for."""

from __future__ import annotations

from typing import Final

from droneshield.db.pool import Connection

_WAITING: Final = """
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
"""
_BUILD: Final = "query LIKE '% INDEX CONCURRENTLY %'"


async def another_waits_for_a_lock(conn: Connection) -> bool:
    return bool(await conn.fetchval(f"SELECT count(*) > 0 {_WAITING} AND NOT {_BUILD}"))


async def cancel_lock_waiters(conn: Connection) -> int:
    """Cancel the statements of the other sessions waiting for a lock (pg_cancel_backend, as a
    role's statement_timeout would end them); how many."""
    return int(
        await conn.fetchval(f"SELECT count(pg_cancel_backend(pid)) {_WAITING} AND NOT {_BUILD}")
    )


async def an_index_build_waits(conn: Connection) -> bool:
    """Whether an index build (CONCURRENTLY) waits for another transaction to end."""
    return bool(await conn.fetchval(f"SELECT count(*) > 0 {_WAITING} AND {_BUILD}"))
