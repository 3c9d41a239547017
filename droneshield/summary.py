"""Fleet totals by status and by version, from the maintained counters (`fleet_count`):
computed in O(versions) whatever the fleet's size, and kept fresh in `hub.summary` once a second
for the WebSocket clients that watch them, so every client shares one read.

`GET /summary` (web/summary.py) answers with the same document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

import trio

from .db import sensors as db
from .db import software
from .db.pool import Pool, acquire, is_transient
from .domain import STATUSES, display, sort_key
from .hub import Hub

log = logging.getLogger(__name__)

SUMMARY_INTERVAL: Final = 1.0  # seconds between two reads of the totals for /ws clients


def by_status(counts: Sequence[db.FleetCount]) -> dict[str, int]:
    """Sensors per status (every status present, 0 when none)."""
    totals: dict[str, int] = {status: 0 for status in STATUSES}
    for c in counts:
        totals[c.status] += c.n
    return totals


def _status_counts(counts: Sequence[db.FleetCount]) -> dict[str, int]:
    # In the order GET /summary's model has always given them (the WebSocket message too).
    totals = by_status(counts)
    return {
        "total": sum(totals.values()),
        "online": totals["online"],
        "offline": totals["offline"],
        "never": totals["never"],
    }


def summarise(counts: Sequence[db.FleetCount]) -> dict[str, object]:
    """The totals document (JSON-ready): `total`, `online`, `offline`, `never`, and the same
    per version in `versions`, newest version first (semver precedence), no version last."""
    by_version: dict[str | None, list[db.FleetCount]] = {}
    for c in counts:
        by_version.setdefault(c.version, []).append(c)
    stored = sorted((v for v in by_version if v is not None), key=sort_key, reverse=True)
    ordered: list[str | None] = [*stored]
    if None in by_version:
        ordered.append(None)
    return {
        **_status_counts(counts),
        "versions": [{**_status_counts(by_version[v]), "version": display(v)} for v in ordered],
    }


def by_version(counts: Sequence[db.FleetCount]) -> dict[str | None, int]:
    """Sensors per canonical version (None: no stored version)."""
    totals: dict[str | None, int] = {}
    for c in counts:
        totals[c.version] = totals.get(c.version, 0) + c.n
    return totals


@dataclass(frozen=True, slots=True)
class Fleet:
    """The maintained counters per (status, version), the retired sensors (counted apart:
    they are in no status), and the versions reported and never uploaded, read together."""

    counts: list[db.FleetCount]
    retired: int
    unreleased: list[software.Unreleased]


async def fleet(pool: Pool) -> Fleet:
    """The counters and the unreleased versions now: O(versions x sites), whatever the
    fleet's size.

    Raises:
        DatabaseUnavailable: no connection could be had.
    """
    async with acquire(pool) as conn:
        return Fleet(
            await db.fleet_counts(conn),
            await db.retired_count(conn),
            await software.unreleased(conn),
        )


async def read(pool: Pool) -> dict[str, object]:
    """The totals now, with the versions reported and never uploaded (`unreleased`).

    Raises:
        DatabaseUnavailable: no connection could be had.
    """
    found = await fleet(pool)
    totals = summarise(found.counts)
    totals["unreleased"] = [
        {
            "version": display(u.version),
            "reports": u.reports,
            "firstSeenAt": u.first_seen_at,
            "lastSeenAt": u.last_seen_at,
        }
        for u in found.unreleased
    ]
    return totals


async def serve_summary(
    pool: Pool,
    hub: Hub,
    *,
    interval: float = SUMMARY_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Refresh `hub.summary` every `interval` while any WebSocket client watches it; idle
    otherwise. Clients send it on when it changes, so each gets at most one a second.

    A database error skips one refresh (logged); it never stops the daemon.
    """
    task_status.started()
    while True:
        await hub.summary.wait_watched()
        try:
            hub.summary.set(await read(pool))
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("reading fleet totals failed: %r", exc)
        await trio.sleep(interval)
