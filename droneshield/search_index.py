"""Search indexes built in the background. A large import (or seeding) leaves them to be built
after its commit (db/bulk.py: they took as long as the rest of the import), and whatever
process imported, a daemon builds them: this task asks every CHECK_INTERVAL seconds (one
single-row read) and builds them with CREATE INDEX CONCURRENTLY on a connection of its own, so
ingest, listings and provisioning go on meanwhile. Until an index is built, searches read
every sensor (web/sensors.py asks whether it is ready): correct, only slower.
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import trio

from .db import bulk
from .db.pool import Pool, acquire
from .periodic import every

log = logging.getLogger(__name__)

CHECK_INTERVAL: Final = 5.0  # seconds between looks for indexes left to build


async def serve_search_indexes(
    pool: Pool, dsn: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    """Build deferred indexes until cancelled (one daemon of several builds; the others find
    its lock taken). Cancelled mid-build, the index is left invalid and built again later."""

    async def build_search_indexes() -> None:
        async with acquire(pool) as conn:
            if not await bulk.deferred(conn):
                return
        began = trio.current_time()
        for name in await bulk.build_deferred(dsn):
            log.info("index %s built (%.1f s after the import)", name, trio.current_time() - began)

    task_status.started()
    await every(build_search_indexes, 0, CHECK_INTERVAL)
