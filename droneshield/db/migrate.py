"""Migrations: numbered plain SQL files in db/migrations, each applied once, in order, under an
advisory lock so several daemons starting together apply each file exactly once."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import DroneshieldError
from ..resources import MIGRATIONS_DIR
from .pool import Connection, on_connection

if TYPE_CHECKING:
    from ..progress import Steps  # rich draws bars for the CLI; the work only counts

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


class NotMigrated(DroneshieldError):
    """The database lacks migrations this code needs (a command other than `serve` or
    `migrate` ran first)."""

    code = "not_migrated"


async def require_migrated(conn: Connection, directory: Path = MIGRATIONS_DIR) -> None:
    """Raises: NotMigrated, saying what to run, when a migration is not applied yet."""
    if missing := await pending(conn, directory):
        raise NotMigrated(
            f"the database is not migrated ({len(missing)} of {len(migration_files(directory))}"
            " migrations pending): run droneshield migrate"
        )


async def migrate(
    conn: Connection, directory: Path = MIGRATIONS_DIR, steps: Steps | None = None
) -> list[str]:
    """Apply what is missing, each file in its own transaction. Returns the names applied.

    `steps` learns how many files are pending (once the lock is held) and advances per file.
    """
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        todo = [(n, path) for n, path in migration_files(directory) if n not in done]
        if steps:
            steps.total = len(todo)
        for number, path in todo:
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migration (version, name) VALUES ($1, $2)",
                    number,
                    path.name,
                )
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
            if steps:
                steps.advance()
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now


async def migrate_database(dsn: str, steps: Steps | None = None) -> list[str]:
    """What `droneshield migrate` and `serve` do first: apply what is missing, and say so.

    `serve` migrates at start whatever its worker count (a supervisor once, before its workers
    start): the code that serves needs the schema it was written for, and the advisory lock
    makes daemons starting together apply each file once.
    """
    applied = await on_connection(dsn, partial(migrate, steps=steps))
    log.info("migrations applied: %s", applied or "none needed")
    return applied
