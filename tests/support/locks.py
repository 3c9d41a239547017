"""Sessions waiting for a lock: how a test knows the statement it started has reached the row
or table it holds (only the database sees that, so it is polled), and how it makes that
statement fail as a cancelled one does."""

from __future__ import annotations

from typing import Final

from droneshield.db.pool import Connection

_WAITERS: Final = """
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
"""


async def another_waits_for_a_lock(conn: Connection) -> bool:
    return bool(await conn.fetchval(f"SELECT count(*) > 0 {_WAITERS}"))


async def cancel_lock_waiters(conn: Connection) -> int:
    """Cancel the statements of the other sessions waiting for a lock (pg_cancel_backend, as a
    role's statement_timeout would end them); how many."""
    return int(await conn.fetchval(f"SELECT count(pg_cancel_backend(pid)) {_WAITERS}"))
