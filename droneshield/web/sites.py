"""`GET /sites`: every site with its sensors by status, from the maintained counters."""

from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_response

from ..db import sensors as db
from ..db.pool import acquire
from .context import pool
from .schema import ApiModel, errors
from .summary import StatusCounts

blueprint = Blueprint("sites", __name__)


class SiteCounts(StatusCounts):
    site: str | None = Field(description="null: sensors with no site")
    covered: bool = Field(description="at least one sensor of the site is online")


class SiteList(ApiModel):
    """Sites in name order (sensors without a site last); retired sensors are not counted.
    O(sites x versions) to compute, whatever the fleet's size."""

    items: list[SiteCounts]


def sites_of(counts: list[db.SiteCount]) -> list[SiteCounts]:
    by_site: dict[str | None, dict[str, int]] = {}
    for c in counts:
        by_site.setdefault(c.site, {"online": 0, "offline": 0, "never": 0})[c.status] += c.n
    ordered = sorted(by_site, key=lambda s: (s is None, s or ""))
    return [
        SiteCounts(
            site=site,
            total=sum(by_site[site].values()),
            covered=by_site[site]["online"] > 0,
            **by_site[site],
        )
        for site in ordered
    ]


@blueprint.get("/sites")
@validate_response(SiteList)
@errors()
async def list_sites() -> SiteList:
    """Sites with their online/offline/never totals: is each site covered?"""
    async with acquire(pool()) as conn:
        counts = await db.site_counts(conn)
    return SiteList(items=sites_of(counts))
