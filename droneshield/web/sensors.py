"""`GET /sensors` (pages, keyset cursors, sorts, filters, search), `GET /sensors/{serial}`
(with availability) and `GET /sensors/{serial}/events` (its history, newest first)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Final, Literal, TypeVar, cast

import orjson
import trio
from pydantic import AfterValidator, BeforeValidator, Field, JsonValue
from pydantic.json_schema import SkipJsonSchema
from quart import Blueprint, Response, current_app
from quart_schema import validate_querystring, validate_response

from ..availability import DAY, WEEK, availability
from ..db import sensors as db
from ..db.pool import Connection, Record, acquire
from ..domain import (
    SERIAL_MAX,
    EventKind,
    Status,
    canonical,
    display,
    echo,
    is_serial,
    status_of,
)
from ..errors import Invalid, NotFound
from ..provisioning import check_site
from .context import hub, listing_pool, pool
from .messages import item
from .schema import ApiModel, errors, responds

blueprint = Blueprint("sensors", __name__)
T = TypeVar("T")

LIMIT_DEFAULT: Final = 50
LIMIT_MAX: Final = 500  # larger limits are capped to this
PAGE_MAX: Final = 1_000_000
COUNT_CAP: Final = 10_000  # matches a search counts before its total becomes a lower bound
GRAMS_READY_FOR: Final = 1.0  # seconds a process trusts that the trigram index is (not) built
GRAM_STATS_FOR: Final = 60.0  # seconds a process keeps the trigrams' statistics (autovacuum's pace)
EVENTS_DEFAULT: Final = 50
EVENTS_MAX: Final = 500
TEXT_MAX: Final = 256  # characters of a site, label or search


def _site_name(site: str) -> str:
    # As provisioning and webhook filters check it; a NUL would otherwise reach PostgreSQL,
    # which refuses it (a 500). Empty stays empty: any site, as an empty form field means.
    return check_site(site) if site else site


SiteName = Annotated[str, AfterValidator(_site_name)]  # a query's `site`


def _empty_allowed(schema: dict[str, JsonValue]) -> None:
    """The schema of an enum a query may also leave empty (`status=`)."""
    schema["enum"] = [*cast(list[JsonValue], schema["enum"]), ""]


# A query's `status`: empty means any, as for `site` and `version` (a form's empty select).
StatusName = Annotated[
    db.Listed | SkipJsonSchema[None], BeforeValidator(lambda value: value or None)
]


class SensorQuery(ApiModel):
    page: int = Field(1, ge=1, le=PAGE_MAX, description="1-based page number")
    limit: int = Field(
        LIMIT_DEFAULT, ge=1, description=f"sensors per page; values above {LIMIT_MAX} are capped"
    )
    cursor: str | SkipJsonSchema[None] = Field(
        None,
        description="`nextCursor` of the previous page: continue after it (an index range "
        "scan, fast at any depth). Not with `page`: a cursor says where the page starts. A "
        "cursor belongs to its sort and order.",
    )
    sort: db.Sort = Field(
        "serial",
        description="`serial` (byte order), `status_changed_at`, `last_seen_at` (online "
        "sensors first as one group in serial order, since all reported within "
        "offline_after; then silent ones by their last report; never-seen ones last, in "
        "descending order) or `version` (semver precedence)",
    )
    order: Literal["asc", "desc"] = "asc"
    status: StatusName = Field(
        None,
        description="`retired` lists the retired sensors (and only they); empty: any",
        json_schema_extra=_empty_allowed,
    )
    version: str | SkipJsonSchema[None] = Field(
        None, description="only sensors running this version (`v1.2.3` or `1.2.3`)"
    )
    site: SiteName | SkipJsonSchema[None] = Field(None, max_length=TEXT_MAX, description="one site")
    q: str | SkipJsonSchema[None] = Field(
        None,
        max_length=SERIAL_MAX,
        description="substring of the serial or the label: any printable text, ASCII "
        "letters in any case, other letters as typed",
    )


class Sensor(ApiModel):
    id: int
    serial: str
    version: str | None = Field(description="stored version, shown as `v1.2.3`")
    status: Status
    online: bool
    last_seen_at: datetime | None
    status_changed_at: datetime | None
    site: str | None
    label: str | None
    reported_version: str | None = Field(
        description="the version the sensor last reported when that one was never uploaded "
        "(so it is not stored), while this daemon knows it; else null"
    )

    @classmethod
    def of(cls, row: db.Listing) -> Sensor:
        state = row.state
        return cls(
            id=state.id,
            serial=state.serial,
            version=display(state.version),
            status=state.status,
            online=state.online,
            last_seen_at=state.last_seen_at,
            status_changed_at=state.status_changed_at,
            site=row.site,
            label=row.label,
            reported_version=display(hub().reported_version(state.id)),
        )


class SensorPage(ApiModel):
    """One page of sensors in the requested order (ties by serial)."""

    items: list[Sensor]
    page: int
    limit: int = Field(description="the limit applied (after capping)")
    sort: db.Sort
    order: Literal["asc", "desc"]
    total: int = Field(
        description="sensors matching the filters, from maintained counters; with `q` or "
        f"`status=retired`, counted up to {COUNT_CAP:,} (see `totalExact`)"
    )
    total_exact: bool = Field(
        description=f"false: more than {COUNT_CAP:,} sensors match and `total` is a lower "
        "bound (shown as more than 10,000)"
    )
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class SensorEvent(ApiModel):
    id: int
    at: datetime
    kind: EventKind
    old: str | None
    new: str | None

    @classmethod
    def of(cls, e: db.EventRow) -> SensorEvent:
        old, new = (display(e.old), display(e.new)) if e.kind == "version" else (e.old, e.new)
        return cls(id=e.id, at=e.at, kind=e.kind, old=old, new=new)


class Availability(ApiModel):
    """Share of time online (0 to 1) from the sensor's events; null: provisioned too recently
    to say. Time before the sensor was provisioned does not count."""

    last_24h: float | None = Field(alias="last24h")
    last_7d: float | None = Field(alias="last7d")


class SensorDetail(Sensor):
    """One sensor, its availability, and its latest transitions, newest first."""

    retired: bool
    created_at: datetime
    availability: Availability
    events: list[SensorEvent]


class DetailQuery(ApiModel):
    events: int = Field(20, ge=0, le=EVENTS_MAX, description="how many recent events")


class EventsQuery(ApiModel):
    cursor: str | SkipJsonSchema[None] = Field(
        None, description="`nextCursor` of the previous page"
    )
    limit: int = Field(EVENTS_DEFAULT, ge=1, le=EVENTS_MAX)


class EventPage(ApiModel):
    """A sensor's transitions, newest first (online, offline, version, retired, restored)."""

    items: list[SensorEvent]
    next_cursor: str | None


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _unb64(cursor: str) -> object:
    """Raises:
    Invalid: not a cursor this API gave out."""
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise Invalid("cursor is not one this API returned", code="invalid_cursor") from None


def encode_cursor(order: db.Order, key: str, serial: str) -> str:
    return _b64([order.sort, order.descending, key, serial])


def decode_cursor(cursor: str, order: db.Order) -> db.Cursor:
    """Raises:
    Invalid: not a cursor this API gave out, or one of another sort or order.
    """
    match _unb64(cursor):
        case [str(sort), bool(descending), str(key), str(serial)] if is_serial(serial):
            if (sort, descending) != (order.sort, order.descending):
                raise Invalid(
                    "cursor belongs to another sort or order; start again without it",
                    code="invalid_cursor",
                )
            return db.Cursor(key, serial)  # its key is judged where it is cast (db.listing)
    raise Invalid("cursor is not one this API returned", code="invalid_cursor")


def _printable(text: str, name: str) -> str:
    """Raises:
    Invalid: control characters (PostgreSQL refuses a NUL: a 500)."""
    if not text.isprintable():
        raise Invalid(f"{name} must be printable text", code="invalid_parameter")
    return text


def _filter(query: SensorQuery) -> db.SensorFilter:
    """Raises:
    InvalidVersion: a malformed version.
    Invalid: a malformed search.
    """
    version = canonical(query.version) if query.version else None
    q = _printable(query.q, "q") if query.q else None
    return db.SensorFilter(query.status, version, query.site or None, q)


def _item(row: Record, reported: Callable[[int], str | None]) -> dict[str, object]:
    """A row of `db.listing` as the page shows it."""
    sensor_id, seen = row["id"], row["last_seen_at"]
    shown = item(
        sensor_id,
        row["serial"],
        row["version"],
        status_of(row["online"], seen),
        seen,
        row["status_changed_at"],
    )
    shown["site"] = row["site"]
    shown["label"] = row["label"]
    shown["reportedVersion"] = display(reported(sensor_id))
    return shown


@blueprint.get("/sensors")
@validate_querystring(SensorQuery)
@responds(200, SensorPage)
@errors(400)
async def list_sensors(query_args: SensorQuery) -> Response:
    """List sensors page by page, sorted, filtered and searched.

    Follow `nextCursor` for fast paging at any depth in every order. Page numbers are fast
    at any depth of the unfiltered listing by serial, and for the first and last pages of
    every other listing; middle pages cost more the deeper they are. A search (or
    `status=retired`) is counted up to 10,000 matches, and its pages reach that far (400
    beyond: follow `nextCursor`)."""
    if query_args.cursor is not None and "page" in query_args.model_fields_set:
        raise Invalid(
            "give cursor or page, not both: a cursor already says where the page starts",
            code="invalid_parameter",
        )
    flt = _filter(query_args)
    order = db.Order(query_args.sort, query_args.order == "desc")
    limit = min(query_args.limit, LIMIT_MAX)
    after = None if query_args.cursor is None else decode_cursor(query_args.cursor, order)
    offset = 0 if after is not None else (query_args.page - 1) * limit
    if db.counted_by_cap(flt) and offset >= COUNT_CAP:
        # Its total is a bound past the cap, so a page there cannot be read from the end: it
        # reads every match before it (page 1,000,000 of a search read the whole fleet with
        # ILIKE, seconds a request). Cursors page on at any depth (as search engines do).
        raise Invalid(
            f"pages of a search (or of retired sensors) reach the first {COUNT_CAP:,} matches; "
            "follow nextCursor to go further",
            code="invalid_parameter",
        )
    async with acquire(listing_pool()) as conn:
        grams: list[str] = []
        candidates = math.inf
        if flt.q is not None and await _has_grams(conn):
            stats = await _gram_stats(conn)
            grams = db.narrowing_grams(stats.shares, flt.q)
            candidates = stats.candidates(grams)
        rows, total, exact = await db.listing(
            conn,
            flt,
            order,
            after=after,
            offset=offset,
            limit=limit + 1,
            cap=COUNT_CAP,
            grams=grams,
            candidates=candidates,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    # Encoded straight from the rows (the document is SensorPage, as the schemathesis test
    # checks): building and validating 50 pydantic models and encoding them cost more CPU per
    # page than the rest of the request.
    reported = hub().reported_version
    page = {
        "items": [_item(r, reported) for r in rows],
        "page": query_args.page,
        "limit": limit,
        "sort": order.sort,
        "order": query_args.order,
        "total": total,
        "totalExact": exact,
        "nextCursor": (
            encode_cursor(order, rows[-1]["sort_key"], rows[-1]["serial"]) if more else None
        ),
    }
    return current_app.response_class(
        orjson.dumps(page, option=orjson.OPT_UTC_Z), content_type="application/json"
    )


async def _has_grams(conn: Connection) -> bool:
    """Whether the search's trigram index is built (an import may have left it to be built:
    db/bulk.py), asked at most once per GRAMS_READY_FOR seconds per process: without the
    index a search must not ask for trigrams, which would make PostgreSQL compute them for
    every sensor."""
    return await _kept("DRONESHIELD_SEARCH_GRAMS", GRAMS_READY_FOR, partial(db.has_grams, conn))


async def _gram_stats(conn: Connection) -> db.GramStats:
    """The trigrams' statistics (`db.gram_stats`), read at most once per GRAM_STATS_FOR
    seconds per process: they change when PostgreSQL analyzes the table."""
    # Not kept while there are none: the index was just built and not analyzed yet.
    return await _kept(
        "DRONESHIELD_GRAM_STATS",
        GRAM_STATS_FOR,
        partial(db.gram_stats, conn),
        keep=lambda stats: bool(stats.shares),
    )


async def _kept(
    key: str,
    seconds: float,
    read: Callable[[], Awaitable[T]],
    keep: Callable[[T], bool] = lambda _: True,
) -> T:
    """What `read` answers, kept in the app's config for `seconds` if `keep` says so."""
    config = current_app.config
    read_at, value = config.get(key, (None, None))
    now = trio.current_time()
    if read_at is None or now - read_at >= seconds:
        value = await read()
        if keep(value):
            config[key] = (now, value)
    kept: T = value
    return kept


async def _sensor(conn: Connection, serial: str) -> db.Detail:
    """Raises:
    NotFound: no such sensor (retired ones are found)."""
    detail = await db.get(conn, serial) if is_serial(serial) else None
    if detail is None:
        raise NotFound(f"no sensor {echo(serial)}", code="sensor_not_found")
    return detail


@blueprint.get("/sensors/<path:serial>/events")
@validate_querystring(EventsQuery)
@validate_response(EventPage)
@errors(400, 404)
async def sensor_events(serial: str, query_args: EventsQuery) -> EventPage:
    """A sensor's whole retained history, newest first, a keyset page at a time."""
    before = None
    if query_args.cursor is not None:
        match _unb64(query_args.cursor):
            case [str(at), int(event_id)] if 0 <= event_id < 2**63:
                try:
                    when = datetime.fromisoformat(at)
                    if when.tzinfo is not None:  # as given out; a naive one is no instant
                        before = (when.astimezone(UTC), event_id)
                except (ValueError, OverflowError):
                    pass
        if before is None:
            raise Invalid("cursor is not one this API returned", code="invalid_cursor")
    async with acquire(pool()) as conn:
        detail = await _sensor(conn, serial)
        rows = await db.events(
            conn, detail.listing.state.id, before=before, limit=query_args.limit + 1
        )
    more = len(rows) > query_args.limit
    rows = rows[: query_args.limit]
    return EventPage(
        items=[SensorEvent.of(e) for e in rows],
        next_cursor=_b64([rows[-1].at.isoformat(), rows[-1].id]) if more else None,
    )


@blueprint.get("/sensors/<serial:serial>")
@validate_querystring(DetailQuery)
@validate_response(SensorDetail)
@errors(400, 404)
async def get_sensor(serial: str, query_args: DetailQuery) -> SensorDetail:
    """One sensor (retired ones too) with its availability and its latest events."""
    async with acquire(pool()) as conn:
        detail = await _sensor(conn, serial)
        state = detail.listing.state
        recent = await db.events(conn, state.id, before=None, limit=query_args.events)
        now, history = await db.status_events_since(conn, state.id, WEEK.total_seconds())

    def share(window: timedelta) -> float | None:
        return availability(
            history,
            online_now=state.online,
            provisioned_at=detail.created_at,
            now=now,
            window=window,
        )

    return SensorDetail(
        **Sensor.of(detail.listing).model_dump(),
        retired=detail.listing.retired,
        created_at=detail.created_at,
        availability=Availability(last24h=share(DAY), last7d=share(WEEK)),
        events=[SensorEvent.of(e) for e in recent],
    )
