"""Fleet totals, read from the `fleet_count` counters that triggers keep current (never a count
over the sensor table)."""

from __future__ import annotations

from typing import Final

from .pool import Connection

_COUNTS: Final = "SELECT status, version, n FROM fleet_count WHERE n <> 0"


async def fleet_counts(conn: Connection) -> list[tuple[str, str | None, int]]:
    """(status, canonical version or None, sensors) for every non-empty combination."""
    rows = await conn.fetch(_COUNTS)
    return [(r["status"], r["version"] or None, r["n"]) for r in rows]
