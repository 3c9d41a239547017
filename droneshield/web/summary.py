"""`GET /summary`: fleet totals by status and by version, from the maintained counters."""

from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_response

from ..db import sensors as db
from ..versions import display, sort_key
from .context import pool
from .schema import ApiModel, errors

blueprint = Blueprint("summary", __name__)


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


@blueprint.get("/summary")
@validate_response(Summary)
@errors()
async def summary() -> Summary:
    """Counts by status, overall and per stored version."""
    async with pool().acquire() as conn:
        counts = await db.fleet_counts(conn)
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
