"""Where the simulated sensors' serials come from: the daemon's database (read-only, as the
original simulator did) or a file with one serial per line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

import asyncpg

from .backoff import Backoff

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 5.0  # seconds


def from_file(path: Path) -> list[str]:
    """Serials, one per line; blank lines and `#` comments are skipped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


async def from_database(url: str, limit: int | None) -> list[str]:
    """The first `limit` serials (all when None) of the sensors in service (not retired: the
    daemon refuses their reports), in provisioning order."""
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        rows = await conn.fetch(
            "SELECT serial FROM sensor WHERE retired_at IS NULL ORDER BY id LIMIT $1", limit
        )
    finally:
        await conn.close()
    return [r["serial"] for r in rows]


async def wait_for_serials(url: str, limit: int | None, backoff: Backoff) -> list[str]:
    """Serials from the database, waiting (with backoff) while it is unreachable, not yet
    migrated, or not yet seeded, as when everything starts at once under docker compose.

    Cancellation: safe at any point; nothing is left open.
    """
    loop = asyncio.get_running_loop()
    while True:
        try:
            serials = await from_database(url, limit)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            problem = f"database not ready ({exc!r})"
        else:
            if serials:
                backoff.succeeded()
                return serials
            problem = "no sensors provisioned yet"
        pause = backoff.failed(backoff.generation, loop.time())
        log.warning("%s; trying again in %.1f s", problem, pause)
        await asyncio.sleep(pause or 0)
