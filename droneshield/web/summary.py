"""`GET /summary`: fleet totals by status and by version (`droneshield/summary.py` computes them,
and keeps the same document fresh for the `/ws` `summary` message)."""

from __future__ import annotations

from pydantic import Field
from quart import Blueprint
from quart_schema import validate_response

from .. import summary as fleet
from .context import pool
from .schema import ApiModel, errors
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
