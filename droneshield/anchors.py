"""Page anchors kept fresh in the background: when sensors are provisioned or removed the
anchors (`db.sensors`, migration 0005) go stale, and rebuilding them is a full ordered scan
(~1 s at a million sensors). A GET never pays it: while they are stale, deep pages skip rows
with OFFSET (correct, slower), and this task rebuilds them within ANCHOR_CHECK_INTERVAL.
Provisioning happens in other processes too (`droneshield seed`, imports), so the task asks
the database (one single-row read) instead of waiting to be told.
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import trio

from .db.pool import Pool, acquire, is_transient
from .db.sensors import rebuild_anchors

log = logging.getLogger(__name__)

ANCHOR_CHECK_INTERVAL: Final = 2.0  # seconds between freshness checks of the page anchors


async def serve_anchors(
    pool: Pool,
    *,
    interval: float = ANCHOR_CHECK_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Rebuild stale page anchors every `interval` seconds until cancelled (one daemon of
    several does it; the others find the lock taken or the anchors fresh).

    A transient database error skips one check (logged); others propagate.
    """
    task_status.started()
    while True:
        try:
            async with acquire(pool) as conn:
                if await rebuild_anchors(conn):
                    log.info("page anchors rebuilt")
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("rebuilding page anchors failed (%r); next check in %.0f s", exc, interval)
        await trio.sleep(interval)
