"""`GET /summary`: fleet totals by status and by version (`droneshield/summary.py` computes them,
and keeps the same document fresh for the `/ws` `summary` message); `GET /summary/history`: the
same totals over time, from the samples `droneshield/history.py` takes once a minute."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from .. import history
from .. import summary as fleet
from ..domain import display
from .context import pool
from .schema import ApiModel, errors
from .sensors import TEXT_MAX as SITE_MAX
from .sensors import SiteName
from .software import UnreleasedItem

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
    unreleased: list[UnreleasedItem] = Field(
        description="versions sensors report that were never uploaded, latest reported first"
    )


@blueprint.get("/summary")
@validate_response(Summary)
@errors()
async def summary() -> Summary:
    """Counts by status, overall and per stored version."""
    return Summary.model_validate(await fleet.read(pool()))


_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_only(value: object) -> object:
    # pydantic would read `to=0.5` as a Unix time; the document promises ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-01T10:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


class HistoryQuery(ApiModel):
    from_: IsoDateTime | SkipJsonSchema[None] = Field(
        None, alias="from", description="start (ISO 8601; no offset: UTC); default `to` - 24 h"
    )
    to: IsoDateTime | SkipJsonSchema[None] = Field(None, description="end (exclusive); default now")
    step: Literal["1m", "5m", "1h", "1d"] | SkipJsonSchema[None] = Field(
        None,
        description=f"bucket size; default the finest that gives at most "
        f"{history.MAX_POINTS} points",
    )
    site: SiteName | SkipJsonSchema[None] = Field(
        None,
        max_length=SITE_MAX,
        description="only this site's totals (empty: sensors without a site); no versions",
    )


class HistoryPoint(ApiModel):
    at: datetime = Field(description="start of the bucket")
    sampled_at: datetime = Field(
        description="the minute of the sample the point holds: the bucket's last, so in a "
        "coarse bucket later than `at`"
    )
    total: int
    online: int
    offline: int
    never: int
    versions: dict[str, int] = Field(
        description="sensors per version (`v1.2.3`; `none`: no stored version); fleet-wide "
        "only, empty with `site`"
    )


class History(ApiModel):
    """Fleet totals over time: each point is the last sample (one a minute) of its bucket."""

    from_: datetime = Field(alias="from")
    to: datetime
    step: str
    site: str | None = Field(description="the site asked for; null: the whole fleet")
    points: list[HistoryPoint] = Field(
        description="oldest first; buckets without samples are left out"
    )


@blueprint.get("/summary/history")
@validate_querystring(HistoryQuery)
@validate_response(History)
@errors(400)
async def summary_history(query_args: HistoryQuery) -> History:
    """Fleet totals by status and version over a range, in buckets of `step`; 400 for a
    range that is empty or backwards, or that holds more than the maximum of points."""
    asked = history.span(query_args.from_, query_args.to, query_args.step, datetime.now(UTC))
    samples = await history.read(pool(), asked, query_args.site)
    return History(
        from_=asked.start,
        to=asked.end,
        step=asked.step,
        site=query_args.site,
        points=[
            HistoryPoint(
                at=s.at,
                sampled_at=s.sampled,
                total=s.online + s.offline + s.never,
                online=s.online,
                offline=s.offline,
                never=s.never,
                versions={display(v) if v else "none": n for v, n in s.versions.items()},
            )
            for s in samples
        ],
    )
