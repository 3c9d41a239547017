"""Migrations: numbered plain SQL files in db/migrations, each applied once, in order, under an
advisory lock so several daemons starting together apply each file exactly once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from ..resources import MIGRATIONS_DIR
from .pool import Connection, on_connection

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY: Final = 0x64726F6E  # "dron"

_CREATE_LEDGER: Final = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """`0001_initial.sql` → (1, path), sorted; a file not named NNNN_name.sql is an error."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        number, _, _ = path.stem.partition("_")
        if not number.isdigit():
            raise ValueError(f"migration {path.name} must start with its number, e.g. 0002_x.sql")
        found.append((int(number), path))
    return found


async def pending(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Migrations not yet applied (readiness checks use this; nothing is changed)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migration') IS NOT NULL")
    applied = (
        {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        if exists
        else set()
    )
    return [n for n, _ in migration_files(directory) if n not in applied]


async def migrate(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing, each file in its own transaction. Returns the names applied."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        for number, path in migration_files(directory):
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migration (version, name) VALUES ($1, $2)",
                    number,
                    path.name,
                )
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now


async def migrate_database(dsn: str) -> list[str]:
    """What `droneshield migrate` and `serve` do first: apply what is missing, and say so.

    `serve` migrates at start whatever its worker count (a supervisor once, before its workers
    start): the code that serves needs the schema it was written for, and the advisory lock
    makes daemons starting together apply each file once.
    """
    applied = await on_connection(dsn, migrate)
    log.info("migrations applied: %s", applied or "none needed")
    return applied
