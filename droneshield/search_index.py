"""Search indexes built in the background. A large import (or seeding) leaves them to be built
after its commit (db/bulk.py: they took as long as the rest of the import), and whatever
process imported, a daemon builds them: this task asks every CHECK_INTERVAL seconds (one
single-row read) and builds them with CREATE INDEX CONCURRENTLY on a connection of its own, so
ingest, listings and provisioning go on meanwhile. Until an index is built, searches read
every sensor (web/sensors.py asks whether it is ready): correct, only slower.

The index only speeds searches up, so nothing about building it ends the daemon: an error that
is not transient (a role without the right to create it, say) is logged and tried again after
FAILED_PAUSE, where a crash would have stopped every daemon of the fleet, again at each start.
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import trio

from .db import bulk
from .db.pool import Pool, acquire, is_transient

log = logging.getLogger(__name__)

CHECK_INTERVAL: Final = 5.0  # seconds between looks for indexes left to build
FAILED_PAUSE: Final = 600.0  # seconds before trying again after a build failed for good


async def serve_search_indexes(
    pool: Pool, dsn: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    """Build deferred indexes until cancelled (one daemon of several builds; the others find
    its lock taken). Cancelled mid-build, the index is left invalid and built again later."""
    task_status.started()
    while True:
        pause = CHECK_INTERVAL
        try:
            await _build(pool, dsn)
        except Exception as exc:
            if is_transient(exc):
                log.warning("building the search index failed (%r); next try in %.0f s", exc, pause)
            else:
                pause = FAILED_PAUSE
                log.exception(
                    "building the search index failed; searches read every sensor until it is "
                    "built; next try in %.0f s",
                    pause,
                )
        await trio.sleep(pause)


async def _build(pool: Pool, dsn: str) -> None:
    async with acquire(pool) as conn:
        if not await bulk.deferred(conn):
            return
    began = trio.current_time()
    if built := await bulk.build_deferred(dsn):
        log.info("built %s in %.1f s", ", ".join(built), trio.current_time() - began)
