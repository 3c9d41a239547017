"""Fleet totals for the dashboard: one query a second for the whole process, shared by every
WebSocket client through `hub.summary` (each client sends only the newest, at most once a
second)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final, NoReturn

import trio

from .db.fleet import fleet_counts
from .db.pool import Pool, acquire, is_transient
from .hub import Hub
from .versions import display, sort_key

log = logging.getLogger(__name__)

SUMMARY_INTERVAL: Final = 1.0  # seconds between two reads of the fleet totals
STATUSES: Final = ("never", "online", "offline")


def totals(counts: Iterable[tuple[str, str | None, int]]) -> dict[str, object]:
    """`{total, byStatus, byVersion}` from (status, version, n) rows; versions newest first,
    sensors without a stored version last (version None)."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_version: dict[str | None, dict[str, int]] = {}
    for status, version, n in counts:
        by_status[status] += n
        by_version.setdefault(version, dict.fromkeys(STATUSES, 0))[status] += n
    ordered = sorted((v for v in by_version if v is not None), key=sort_key, reverse=True)
    if None in by_version:
        ordered.append(None)
    return {
        "total": sum(by_status.values()),
        "byStatus": by_status,
        "byVersion": [
            {"version": display(v), "total": sum(by_version[v].values()), **by_version[v]}
            for v in ordered
        ],
    }


async def serve_summary(
    pool: Pool,
    hub: Hub,
    *,
    interval: float = SUMMARY_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Refresh `hub.summary` every `interval` while anyone watches it; idle otherwise.

    A database error skips one refresh (logged); it never stops the daemon.
    """
    task_status.started()
    while True:
        await hub.summary.wait_watched()
        try:
            async with acquire(pool) as conn:
                hub.summary.set(totals(await fleet_counts(conn)))
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("reading fleet totals failed: %r", exc)
        await trio.sleep(interval)
