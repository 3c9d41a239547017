"""Reading sensors for the API: keyset pages in serial byte order, one sensor with its recent
events, and fleet totals from the maintained `fleet_count` counters.

Pages are ordered by `serial COLLATE "C"` (migration 0002 indexes it): a page after a cursor is
an index range scan whatever the depth, and a serial prefix is a range of that index.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from ..domain import EventKind, SensorState, Status, status_of
from .pool import Connection, Record

# Serials are printable ASCII (0x20-0x7e), so every serial that starts with a prefix sorts
# below the prefix followed by DEL (0x7f): [prefix, prefix + DEL) is exactly the prefix's range.
_PREFIX_END: Final = "\x7f"
ANCHOR_EVERY: Final = 1000  # rows between page anchors (migration 0005)
_ANCHOR_LOCK: Final = 0x616E63686F72  # advisory lock: one instance rebuilds the anchors

_COLUMNS: Final = "id, serial, version, online, last_seen_at, status_changed_at"
_STATUS_SQL: Final[dict[Status, str]] = {
    "never": "NOT online AND last_seen_at IS NULL",  # the same thing; lets the index serve it
    "online": "online",
    "offline": "NOT online AND last_seen_at IS NOT NULL",
}


@dataclass(frozen=True, slots=True)
class EventRow:
    at: datetime
    kind: EventKind
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class SensorFilter:
    """Which sensors a listing shows; None means no restriction."""

    status: Status | None = None
    version: str | None = None  # canonical
    prefix: str | None = None  # printable ASCII, non-empty

    def where(self, first_param: int = 1) -> tuple[list[str], list[object]]:
        """SQL conditions and their arguments, numbered from `$first_param`."""
        conditions: list[str] = []
        args: list[object] = []

        def param(value: object) -> str:
            args.append(value)
            return f"${first_param + len(args) - 1}"

        if self.status is not None:
            conditions.append(_STATUS_SQL[self.status])
        if self.version is not None:
            conditions.append(f"version = {param(self.version)}")
        if self.prefix is not None:
            conditions.append(f'serial COLLATE "C" >= {param(self.prefix)}')
            conditions.append(f'serial COLLATE "C" < {param(self.prefix + _PREFIX_END)}')
        return conditions, args


async def page(
    conn: Connection,
    flt: SensorFilter,
    *,
    after: str | None,
    offset: int,
    limit: int,
    total: int | None = None,
) -> list[SensorState]:
    """Up to `limit` sensors in serial byte order: those after serial `after` (a keyset
    cursor), skipping `offset` more.

    Cursor pages cost O(limit). Deep offsets are shortened: the unfiltered listing starts from
    the nearest page anchor (< ANCHOR_EVERY rows to skip); a filtered one whose exact `total`
    is known reads the far half backwards (the last page is as cheap as the first), so only
    the middle of a filtered listing costs O(offset).
    """
    if after is None and offset >= ANCHOR_EVERY:
        if flt == SensorFilter():
            anchor = await _anchor(conn, offset)
            if anchor is not None:
                position, serial = anchor
                return await _select(conn, flt, (">=", serial), offset - position, limit)
        elif total is not None and offset > total - offset:
            end = min(offset + limit, total)
            if end <= offset:
                return []
            rows = await _select(conn, flt, None, total - end, end - offset, descending=True)
            return rows[::-1]
    return await _select(conn, flt, None if after is None else (">", after), offset, limit)


def _state(row: Record) -> SensorState:
    return SensorState(
        row["id"],
        row["serial"],
        row["version"],
        status_of(row["online"], row["last_seen_at"]),
        row["last_seen_at"],
        row["status_changed_at"],
    )


async def _select(
    conn: Connection,
    flt: SensorFilter,
    bound: tuple[str, str] | None,
    offset: int,
    limit: int,
    *,
    descending: bool = False,
) -> list[SensorState]:
    """`bound` is (comparison, serial): where in byte order the page starts."""
    conditions, args = flt.where()
    if bound is not None:
        args.append(bound[1])
        conditions.append(f'serial COLLATE "C" {bound[0]} ${len(args)}')
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args += [offset, limit]
    rows = await conn.fetch(
        f'SELECT {_COLUMNS} FROM sensor {where} ORDER BY serial COLLATE "C" '
        f"{'DESC' if descending else ''} OFFSET ${len(args) - 1} LIMIT ${len(args)}",
        *args,
    )
    return [_state(r) for r in rows]


_ANCHOR_AT: Final = """
SELECT coalesce(b.set_version = (SELECT n FROM sensor_set_version), false) AS fresh,
       a.position, a.serial
FROM (SELECT 1) AS one
LEFT JOIN sensor_anchor_basis b ON true
LEFT JOIN LATERAL (
    SELECT position, serial FROM sensor_anchor WHERE position <= $1
    ORDER BY position DESC LIMIT 1
) a ON true
"""

# One statement, so the anchors and the basis they are checked against share a snapshot.
_REBUILD_ANCHORS: Final = """
WITH ranked AS (
    SELECT id, serial, row_number() OVER (ORDER BY serial COLLATE "C") - 1 AS position
    FROM sensor
), anchors AS (
    INSERT INTO sensor_anchor (position, serial)
    SELECT position, serial FROM ranked WHERE position % $1 = 0
)
INSERT INTO sensor_anchor_basis (set_version)
SELECT n FROM sensor_set_version
ON CONFLICT (only_row) DO UPDATE SET set_version = excluded.set_version
"""


async def _anchor(conn: Connection, offset: int) -> tuple[int, str] | None:
    """The last anchor at or before `offset`, after rebuilding stale anchors (rare: sensors
    were provisioned or removed). None while another connection rebuilds them."""
    row = await conn.fetchrow(_ANCHOR_AT, offset)
    assert row is not None  # one row, whatever the tables hold (FROM (SELECT 1))
    if not row["fresh"]:
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _ANCHOR_LOCK):
                return None
            await conn.execute("DELETE FROM sensor_anchor")
            await conn.execute(_REBUILD_ANCHORS, ANCHOR_EVERY)
        row = await conn.fetchrow(_ANCHOR_AT, offset)
        assert row is not None
    return None if row["position"] is None else (row["position"], row["serial"])


async def total(conn: Connection, flt: SensorFilter, *, cap: int) -> tuple[int, bool]:
    """(how many sensors match, whether that number is exact).

    Without a prefix the number comes from `fleet_count`: exact, O(1). With a prefix at most
    `cap` sensors of the prefix's range are examined (an index range scan): when the range
    holds more, the answer counts the matches among those and is a lower bound (not exact).
    """
    if flt.prefix is None:
        n = await conn.fetchval(
            "SELECT coalesce(sum(n), 0) FROM fleet_count "
            "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR version = $2)",
            flt.status,
            flt.version,
        )
        return int(n), True
    matches, args = replace(flt, prefix=None).where()
    scope, scope_args = SensorFilter(prefix=flt.prefix).where(len(args) + 1)
    args += [*scope_args, cap + 1]
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE {' AND '.join(matches) or 'true'}) AS n, "
        f"count(*) AS examined FROM (SELECT online, last_seen_at, version FROM sensor "
        f"WHERE {' AND '.join(scope)} LIMIT ${len(args)}) AS prefixed",
        *args,
    )
    assert row is not None  # an aggregate without GROUP BY: always one row
    exact = row["examined"] <= cap
    return (row["n"] if exact else min(row["n"], cap)), exact


async def get(conn: Connection, serial: str) -> SensorState | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM sensor WHERE serial = $1", serial)
    return None if row is None else _state(row)


async def recent_events(conn: Connection, sensor_id: int, limit: int) -> list[EventRow]:
    """The sensor's latest transitions, newest first."""
    rows = await conn.fetch(
        "SELECT at, kind, old, new FROM sensor_event WHERE sensor_id = $1 "
        "ORDER BY at DESC, id DESC LIMIT $2",
        sensor_id,
        limit,
    )
    return [EventRow(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class FleetCount:
    status: Status
    version: str | None
    n: int


async def fleet_counts(conn: Connection) -> list[FleetCount]:
    """Sensors per (status, version) from the maintained counters: O(versions), not O(rows)."""
    rows = await conn.fetch("SELECT status, version, n FROM fleet_count WHERE n <> 0")
    return [FleetCount(r["status"], r["version"] or None, r["n"]) for r in rows]
