"""`GET /sensors` (pages, keyset cursors, filters) and `GET /sensors/{serial}`."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Final

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from ..db import sensors as db
from ..db.pool import acquire
from ..domain import (
    SERIAL_MAX,
    EventKind,
    SensorState,
    Status,
    canonical,
    check_serial,
    display,
    echo,
)
from ..errors import Invalid, InvalidReport, NotFound
from .context import pool
from .schema import ApiModel, errors

blueprint = Blueprint("sensors", __name__)

LIMIT_DEFAULT: Final = 50
LIMIT_MAX: Final = 500  # larger limits are capped to this
PAGE_MAX: Final = 1_000_000
COUNT_CAP: Final = 10_000  # sensors a prefix search examines to count its matches
EVENTS_DEFAULT: Final = 20
EVENTS_MAX: Final = 200


class SensorQuery(ApiModel):
    page: int = Field(1, ge=1, le=PAGE_MAX, description="1-based page number")
    limit: int = Field(
        LIMIT_DEFAULT, ge=1, description=f"sensors per page; values above {LIMIT_MAX} are capped"
    )
    cursor: str | SkipJsonSchema[None] = Field(
        None,
        description="`nextCursor` of the previous page: continue after it (an index range "
        "scan, fast at any depth). With a cursor, `page` is only echoed back.",
    )
    status: Status | SkipJsonSchema[None] = None
    version: str | SkipJsonSchema[None] = Field(
        None, description="only sensors running this version (`v1.2.3` or `1.2.3`)"
    )
    q: str | SkipJsonSchema[None] = Field(
        None, max_length=SERIAL_MAX, description="only serials that start with this prefix"
    )


class Sensor(ApiModel):
    id: int
    serial: str
    version: str | None = Field(description="stored version, shown as `v1.2.3`")
    status: Status
    online: bool
    last_seen_at: datetime | None
    status_changed_at: datetime | None

    @classmethod
    def of(cls, row: SensorState) -> Sensor:
        return cls(
            id=row.id,
            serial=row.serial,
            version=display(row.version),
            status=row.status,
            online=row.online,
            last_seen_at=row.last_seen_at,
            status_changed_at=row.status_changed_at,
        )


class SensorPage(ApiModel):
    """One page of sensors in serial byte order."""

    items: list[Sensor]
    page: int
    limit: int = Field(description="the limit applied (after capping)")
    total: int = Field(
        description="sensors matching the filters, from maintained counters; with `q`, "
        f"counted among at most {COUNT_CAP} sensors of the prefix (see `totalExact`)"
    )
    total_exact: bool = Field(
        description=f"false: the prefix covers more than {COUNT_CAP} sensors and `total` is "
        "a lower bound"
    )
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class SensorEvent(ApiModel):
    at: datetime
    kind: EventKind
    old: str | None
    new: str | None


class SensorDetail(Sensor):
    """One sensor and its latest transitions, newest first."""

    events: list[SensorEvent]


class EventsQuery(ApiModel):
    events: int = Field(EVENTS_DEFAULT, ge=1, le=EVENTS_MAX, description="how many events")


def encode_cursor(serial: str) -> str:
    return base64.urlsafe_b64encode(serial.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Raises:
    Invalid: not a cursor this API gave out.
    """
    try:
        serial = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        return check_serial(serial)
    except (binascii.Error, ValueError, InvalidReport):
        raise Invalid("cursor is not one this API returned", code="invalid_cursor") from None


def _filter(query: SensorQuery) -> db.SensorFilter:
    """Raises:
    InvalidVersion: a malformed version.
    Invalid: a malformed prefix.
    """
    version = canonical(query.version) if query.version else None
    prefix = query.q or None
    if prefix is not None and not (prefix.isascii() and prefix.isprintable()):
        raise Invalid("q must be printable ASCII, as serials are", code="invalid_prefix")
    return db.SensorFilter(query.status, version, prefix)


@blueprint.get("/sensors")
@validate_querystring(SensorQuery)
@validate_response(SensorPage)
@errors(400)
async def list_sensors(query_args: SensorQuery) -> SensorPage:
    """List sensors page by page, optionally filtered.

    Pages are in serial byte order. Follow `nextCursor` for fast paging at any depth. Page
    numbers are fast at any depth without filters, and for the first and last pages with a
    status or version filter; the middle pages of a filtered listing cost more the deeper
    they are.
    """
    flt = _filter(query_args)
    limit = min(query_args.limit, LIMIT_MAX)
    after = None if query_args.cursor is None else decode_cursor(query_args.cursor)
    offset = 0 if after is not None else (query_args.page - 1) * limit
    # One snapshot for the total and the page: the far half of a filtered listing is located
    # from the total, which would otherwise drift between the two while statuses change.
    async with acquire(pool()) as conn, conn.transaction(isolation="repeatable_read"):
        total, exact = await db.total(conn, flt, cap=COUNT_CAP)
        # Nothing matches: skip the page query, which would otherwise scan the whole index.
        rows = (
            []
            if exact and total == 0
            else await db.page(
                conn,
                flt,
                after=after,
                offset=offset,
                limit=limit + 1,
                total=total if exact else None,
            )
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return SensorPage(
        items=[Sensor.of(r) for r in rows],
        page=query_args.page,
        limit=limit,
        total=total,
        total_exact=exact,
        next_cursor=encode_cursor(rows[-1].serial) if more else None,
    )


@blueprint.get("/sensors/<path:serial>")
@validate_querystring(EventsQuery)
@validate_response(SensorDetail)
@errors(400, 404)
async def get_sensor(serial: str, query_args: EventsQuery) -> SensorDetail:
    """One sensor with its recent events (online/offline/version transitions)."""
    try:
        check_serial(serial)
    except InvalidReport:
        raise NotFound(f"no sensor {echo(serial)}", code="sensor_not_found") from None
    async with acquire(pool()) as conn:
        row = await db.get(conn, serial)
        if row is None:
            raise NotFound(f"no sensor {echo(serial)}", code="sensor_not_found")
        events = await db.recent_events(conn, row.id, query_args.events)
    return SensorDetail(
        **Sensor.of(row).model_dump(),
        events=[
            SensorEvent(
                at=e.at,
                kind=e.kind,
                old=display(e.old) if e.kind == "version" else e.old,
                new=display(e.new) if e.kind == "version" else e.new,
            )
            for e in events
        ],
    )
