"""Fleet totals by status and by version, from the maintained counters: `GET /summary`, and
the same document as the `/ws` `summary` message, read once a second for the whole process and
shared by every WebSocket client through `hub.summary`."""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import trio
from pydantic import Field
from quart import Blueprint
from quart_schema import validate_response

from ..db import sensors as db
from ..db.pool import Pool, acquire, is_transient
from ..hub import Hub
from ..versions import display, sort_key
from .context import pool
from .schema import ApiModel, errors

log = logging.getLogger(__name__)

blueprint = Blueprint("summary", __name__)

SUMMARY_INTERVAL: Final = 1.0  # seconds between two reads of the totals for /ws clients


class StatusCounts(ApiModel):
    total: int
    online: int
    offline: int
    never: int = Field(description="provisioned but never reported")


class VersionCounts(StatusCounts):
    version: str | None = Field(description="`v1.2.3`; null: no stored version")


class Summary(StatusCounts):
    """Fleet totals; O(versions) to compute, whatever the fleet's size."""

    versions: list[VersionCounts] = Field(description="newest version first, null last")


def _status_counts(counts: list[db.FleetCount]) -> dict[str, int]:
    totals = db.by_status(counts)
    return {"total": sum(totals.values()), **totals}


def summarise(counts: list[db.FleetCount]) -> Summary:
    by_version: dict[str | None, list[db.FleetCount]] = {}
    for c in counts:
        by_version.setdefault(c.version, []).append(c)
    ordered: list[str | None] = sorted(
        (v for v in by_version if v is not None), key=sort_key, reverse=True
    )
    if None in by_version:
        ordered.append(None)
    return Summary(
        **_status_counts(counts),
        versions=[
            VersionCounts(version=display(v), **_status_counts(by_version[v])) for v in ordered
        ],
    )


@blueprint.get("/summary")
@validate_response(Summary)
@errors()
async def summary() -> Summary:
    """Counts by status, overall and per stored version."""
    async with pool().acquire() as conn:
        return summarise(await db.fleet_counts(conn))


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
            async with acquire(pool) as conn:
                totals = summarise(await db.fleet_counts(conn))
            hub.summary.set(totals.model_dump(mode="json", by_alias=True))
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("reading fleet totals failed: %r", exc)
        await trio.sleep(interval)
