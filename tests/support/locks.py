"""Whether another session waits for a lock: how a test knows the statement it started has
reached the row or table it holds (only the database sees that, so it is polled)."""

from __future__ import annotations

from typing import Final

from droneshield.db.pool import Connection

_WAITING: Final = """
SELECT count(*) > 0 FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
"""


async def another_waits_for_a_lock(conn: Connection) -> bool:
    return bool(await conn.fetchval(_WAITING))
