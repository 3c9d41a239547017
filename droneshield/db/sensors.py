"""Reading sensors for the API: keyset pages in any of four orders, one sensor with its events,
and fleet totals (overall, per version, per site) from the maintained `fleet_count` counters.

Every order is an index of (key, serial), with the online or offline sensors' own where another
status comes first (migrations 0002, 0007, 0016, 0023; `last_seen_at`'s key has a range per
status): a page after a cursor is an index range scan whatever the depth. A site's listings
sort its sensors. `serial` is in byte order (the column's collation is "C"). No key changes on
a heartbeat, so heartbeats stay HOT updates; `last_seen_at` is therefore ordered by `seen_key`
(online sensors first, tied, then silent ones by their frozen last_seen_at, then never-seen
ones), see migration 0007.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Literal

import asyncpg

from ..domain import Edit, EventKind, SensorState, Status, fold, status_of
from ..errors import Invalid
from .pool import Connection, Record

ANCHOR_EVERY: Final = 1000  # rows between page anchors (migration 0005)
GRAM: Final = 3  # characters of a search trigram (migration 0014)
GRAMS_COMMON: Final = 0.5  # share past which reading a trigram's entries costs more than it saves
# A second trigram is asked for when reading its index entries costs less than the candidate
# rows it would likely remove: an entry costs ~1/10 of a candidate row (a heap fetch and the
# LIKE check), and the trigrams of one search are correlated, so half of that is counted on.
GRAMS_SECOND_GAIN: Final = 5.0
# A search reads its matches once, counting and sorting them (`_narrowed`), when the trigram
# index should return at most this many times the count's cap: past the cap, the capped count
# reads up to `cap` of them, `_narrowed` all of them, and the page all of them unless it stops
# early in the key's index.
NARROWED_CANDIDATES_MAX: Final = 2
_ANCHOR_LOCK: Final = 0x616E63686F72  # advisory lock: one instance rebuilds the anchors

# The session of the connections that serve listings (`open_pool(session=...)`).
#
# Plans for the actual arguments: asyncpg prepares every statement, and after five runs
# PostgreSQL may keep a generic plan, blind to the value of a search pattern or a site: one that
# scans the serial index in full when nothing matches (measured ~200 ms at 100k sensors against
# 0.1 ms through the trigram index). Planning costs a fraction of a millisecond.
#
# And no JIT compilation: a page or a capped count is a short query, but a plan estimated to
# read many rows (a search's count at a million sensors) passes `jit_above_cost`, and one that
# did spent 132 ms compiling (`EXPLAIN ANALYZE`, 200k sensors) for rows that an index scan
# without JIT read in 15 ms.
#
# Session settings rather than `SET LOCAL` in a transaction: one statement then reads a page
# and its total with no `BEGIN`, `SET` or `COMMIT` round trip. The rest of the daemon keeps
# its pool's defaults (the writer's statements are the same every time: generic plans suit them).
LISTING_SESSION: Final = {
    "plan_cache_mode": "force_custom_plan",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
}

# One Literal, not `Status | Literal["retired"]`: validation names every choice at once.
Listed = Literal["never", "online", "offline", "retired"]
Sort = Literal["serial", "status_changed_at", "last_seen_at", "version"]
SORTS: Final[tuple[Sort, ...]] = ("serial", "status_changed_at", "last_seen_at", "version")

# What a listing shows of a sensor (`Listing`), as columns.
LISTED: Final = (
    "id", "serial", "version", "online", "last_seen_at", "status_changed_at", "site", "label"
)  # fmt: skip


def _qualified(columns: Sequence[str], table: str) -> str:
    """`columns` for a select list; with `table`, qualified (a statement joining another)."""
    prefix = f"{table}." if table else ""
    return ", ".join(f"{prefix}{c}" for c in columns)


_COLUMNS: Final = _qualified(LISTED, "")


def edited_columns(table: str = "") -> str:
    """What an operator's write returns of each sensor it changed (`edited` reads it); with
    `table`, its columns qualified (a statement joining another table)."""
    return _qualified((*LISTED, "retired_at IS NOT NULL AS retired"), table)


EDITED: Final = edited_columns()
# Never seen: `seen_key = '-infinity'` (`last_seen_at IS NULL`, as a key (seen_key, serial)
# serves in order). Sorted by version, with the key's range of never-seen sensors as well, the
# planner multiplied the two conditions' selectivities as if independent, expected ~70 rows of
# 9,000 and read and sorted them all (125 ms at a million, where walking an index in order
# takes 0.6 ms); migration 0024's statistics of the two columns together say otherwise.
_STATUS_SQL: Final[dict[Status, str]] = {
    "never": "seen_key = '-infinity'",
    "online": "online",
    "offline": "NOT online AND last_seen_at IS NOT NULL",
}
# Each sort's key (an indexed expression, never NULL) and its type, for cursors.
_KEYS: Final[dict[Sort, tuple[str, str]]] = {
    "serial": ("serial", "text"),
    "status_changed_at": ("coalesce(status_changed_at, '-infinity'::timestamptz)", "timestamptz"),
    "last_seen_at": ("seen_key", "timestamptz"),
    "version": ("version_key", "text"),  # stored; the batch statement copies it (migration 0016)
}
# The range of a time sort's key that leaves out never-seen sensors. A sensor with a stored
# version has reported (a CHECK of migration 0016): filtered by version and sorted by a time,
# the never-seen sensors' range is skipped too.
_SEEN_RANGE: Final[dict[Sort, str]] = {
    sort: f"{_KEYS[sort][0]} > '-infinity'" for sort in ("status_changed_at", "last_seen_at")
}
# What a status implies for a sort key: lets the key's index skip the other statuses' range
# (offline sensors sorted by last seen would otherwise be found behind every online one).
# `seen_key`'s three ranges are exactly the three statuses, so sorted by last seen the range
# alone stands for the status: with both, the planner multiplied their selectivities as if
# independent, expected a handful of never-seen rows and sorted all of them (~30 ms at 200k
# sensors instead of 0.3 ms). A sensor that was ever seen has a status_changed_at (a CHECK of
# migration 0016): sorted by it, online and offline sensors skip the never-seen ones' range,
# which comes first (~10,000 rows walked for nothing at a million with a hundredth unseen).
# And a never-seen sensor has none (a CHECK of migration 0024), so that range alone is the
# never-seen sensors (`_RANGE_IS_STATUS`): with the status as well, the same
# multiplication read and sorted all of them (a first page's median 30 ms at a million in
# `just bench`, 109 ms cold in the database, against 0.3 ms along the index).
_STATUS_KEY_RANGE: Final[dict[tuple[Sort, Status], str]] = {
    ("last_seen_at", "online"): "seen_key = 'infinity'",
    ("last_seen_at", "never"): "seen_key = '-infinity'",
    ("last_seen_at", "offline"): "seen_key > '-infinity' AND seen_key < 'infinity'",
    ("status_changed_at", "never"): f"{_KEYS['status_changed_at'][0]} = '-infinity'",
    ("status_changed_at", "online"): _SEEN_RANGE["status_changed_at"],
    ("status_changed_at", "offline"): _SEEN_RANGE["status_changed_at"],
    ("version", "never"): f"{_KEYS['version'][0]} = ''",  # never reported: no stored version
    # Not a range of the key: the predicate of the offline sensors' version index.
    ("version", "offline"): "seen_key > '-infinity'",
}
_RANGE_IS_STATUS: Final[frozenset[tuple[Sort, Status]]] = frozenset(
    {
        ("last_seen_at", "never"),
        ("last_seen_at", "online"),
        ("last_seen_at", "offline"),
        ("status_changed_at", "never"),
    }
)


@dataclass(frozen=True, slots=True)
class Listing:
    """One sensor as listings show it: its state plus what an operator gave it."""

    state: SensorState
    site: str | None
    label: str | None
    retired: bool = False


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    at: datetime
    kind: EventKind
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: after the sensor with this sort key (as text) and serial."""

    key: str
    serial: str


@dataclass(frozen=True, slots=True)
class SensorFilter:
    """Which sensors a listing shows; None means no restriction. Retired sensors are listed
    only by `status="retired"`, and then only they."""

    status: Listed | None = None
    version: str | None = None  # canonical
    site: str | None = None
    q: str | None = None  # substring of serial or label, ASCII letters in any case; non-empty

    def where(
        self, first_param: int = 1, sort: Sort = "serial", *, grams: Sequence[str] = ()
    ) -> tuple[list[str], list[object]]:
        """SQL conditions and their arguments, numbered from `$first_param`; with `grams`
        (trigrams of the search, see `narrowing_grams`), a search of sensors not retired looks
        its matches up in the trigram index (migration 0025's), by the sensors holding them
        all."""
        conditions: list[str] = []
        args: list[object] = []

        def param(value: object) -> str:
            args.append(value)
            return f"${first_param + len(args) - 1}"

        if self.status == "retired":
            conditions.append("retired_at IS NOT NULL")
        else:
            conditions.append("retired_at IS NULL")
            if self.status is not None:
                status: Status = self.status
                if (sort, status) not in _RANGE_IS_STATUS:
                    conditions.append(_STATUS_SQL[status])
                if (sort, status) in _STATUS_KEY_RANGE:
                    conditions.append(_STATUS_KEY_RANGE[sort, status])
        if self.version is not None:
            # Both: the equality on the version index's expression makes it an ordered range.
            value = param(self.version)
            conditions.append(f"version = {value}")
            conditions.append(f"{_KEYS['version'][0]} = coalesce(version_sort_key({value}), '')")
            if sort in _SEEN_RANGE:
                conditions.append(_SEEN_RANGE[sort])
        if self.site is not None:
            conditions.append(f"site = {param(self.site)}")
        if self.q is not None:
            pattern = param(_containing(self.q))
            if grams and self.status != "retired":
                conditions.append(f"id = ANY (ARRAY ({_searched(pattern, param(list(grams)))}))")
            else:
                conditions.append(_matching(pattern))
        return conditions, args


def _matching(pattern: str) -> str:
    """Whether a row's serial or label, its ASCII letters lower-cased (`fold`: the "C"
    collation's `lower`, whatever the database's locale), is LIKE `pattern` (`_containing`:
    folded already), a row of `sensor` or of `sensor_search`. Not ILIKE, which lower-cases the
    pattern again for every row: 0.43 µs a row against 0.14 (PostgreSQL 15, a million
    serials), ~4 ms of a search checking 14,000 candidates. And "C" folds byte by byte: half
    the time of `lower` under a C.UTF-8 database's own collation (290 against 576 ms for a
    million serials and labels)."""
    return f'(lower(serial COLLATE "C") LIKE {pattern} OR lower(label COLLATE "C") LIKE {pattern})'


def _searched(pattern: str, grams: str | None, columns: str = "id") -> str:
    """The ids (or other `columns`) of the sensors (not retired) whose serial or label is LIKE
    `pattern` (folded), in their search rows (migration 0025: the text is apart from the
    sensor rows, so transitions never write its index): found through the trigram index by
    `grams`, or without them by reading the rows."""
    found = "" if grams is None else f"sensor_grams(serial, label) @> {grams} AND "
    return f"SELECT {columns} FROM sensor_search WHERE {found}{_matching(pattern)}"


def trigrams(text: str) -> list[str]:
    """The trigrams of `text` folded (`fold`), sorted and each once, as `sensor_grams`
    (migrations 0014, 0017) makes them of the serials and labels of `sensor_search`: its
    `serial` is COLLATE "C", so the call's collation, and the function's `lower`, is "C",
    which folds as `fold` does, whatever the database's locale."""
    low = fold(text)
    return sorted({low[i : i + GRAM] for i in range(len(low) - GRAM + 1)})


async def has_grams(conn: Connection) -> bool:
    """Whether the search's trigram index (migration 0025) is built: db/bulk.py may have left
    it to be built after an import."""
    return bool(
        await conn.fetchval(
            "SELECT coalesce((SELECT indisvalid FROM pg_index "
            "WHERE indexrelid = to_regclass('sensor_search_grams')), false)"
        )
    )


# The trigrams' shares of the sensors holding them, from the trigram index's statistics (its
# most common elements; a trigram not among them is rarer than all of them: 0). The frequency
# array ends with three summary figures past the elements, hence the NULL test.
_GRAM_SHARES: Final = """
SELECT e.elem AS gram, e.freq AS share FROM pg_stats s,
    unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(elem, freq)
WHERE s.schemaname = current_schema() AND s.tablename = 'sensor_search_grams'
  AND e.elem IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class GramStats:
    """What PostgreSQL's statistics say of the trigrams: each common one's share of the
    sensors, and how many sensors the shares are of."""

    shares: Mapping[str, float]
    rows: float

    def candidates(self, grams: Sequence[str]) -> float:
        """The sensors the trigram index is likely to return for `grams` (as if independent:
        `DS-0005`'s rarest two, 10-12 % each, are held together by ~1 %); infinite when the
        index has no statistics yet. A trigram missing from them is rarer than any listed:
        half the rarest listed share, as PostgreSQL's own estimates take it."""
        if not self.shares or math.isinf(self.rows):
            return math.inf
        missing = min(self.shares.values()) / 2
        return self.rows * math.prod(self.shares.get(gram, missing) for gram in grams)


async def gram_stats(conn: Connection) -> GramStats:
    """The trigrams' statistics (see `narrowing_grams`): they change only when PostgreSQL
    analyzes the table, so a daemon reads them now and then, not per search (two statements
    and their round trips, ~1.5 ms each of a search's ~15)."""
    rows = await conn.fetchval(
        "SELECT reltuples FROM pg_class WHERE oid = 'sensor_search'::regclass"
    )
    shares = {r["gram"]: r["share"] for r in await conn.fetch(_GRAM_SHARES)}
    # -1: never analyzed, so nothing is known of the candidates either.
    return GramStats(shares, rows if rows >= 0 else math.inf)


def narrowing_grams(shares: Mapping[str, float], q: str) -> list[str]:
    """The trigrams of `q` worth asking the trigram index for, from their `shares` of the
    sensors: the rarest; and the next rarest too when reading its entries is cheaper than the
    candidates it removes (GRAMS_SECOND_GAIN). At a million sequential serials `DS-0005`'s
    rarest two are each held by 10-12 %, together by ~1 %: 27 ms through the index with both,
    130 ms with one, 300 ms scanning; `0099`'s rarest is held by 1.4 %, and its next (12 %)
    would cost more to read than it removes. None when even the rarest is held by
    GRAMS_COMMON of the sensors or more: such a search finds its page and its count's cap
    quickly by scanning in the page's order, where the index would cost a read of most of
    its entries and `sensor_grams` for every row it returns. Stale shares cost speed, never
    results: `LIKE` checks every candidate."""
    if len(q) < GRAM:
        return []
    ranked = sorted((shares.get(gram, 0.0), gram) for gram in trigrams(q))
    usable = [(gram, share) for share, gram in ranked if share < GRAMS_COMMON]
    if not usable:
        return []
    (first, rarest), *rest = usable
    if rest and rest[0][1] < (1 - rest[0][1]) * GRAMS_SECOND_GAIN * rarest:
        return [first, rest[0][0]]
    return [first]


def _containing(q: str) -> str:
    """The LIKE pattern of the folded text (`fold`) holding `q`, `%` and `_` taken literally."""
    return f"%{_escape_like(fold(q))}%"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _listing(row: Record) -> Listing:
    return Listing(
        SensorState(
            row["id"],
            row["serial"],
            row["version"],
            status_of(row["online"], row["last_seen_at"]),
            row["last_seen_at"],
            row["status_changed_at"],
        ),
        row["site"],
        row["label"],
    )


def edited(row: Record) -> SensorState:
    """A sensor an operator's write changed (a row of `EDITED`), as live views get it: with
    its label and whether it is retired."""
    return replace(_listing(row).state, site=row["site"], edit=Edit(row["label"], row["retired"]))


@dataclass(frozen=True, slots=True)
class Order:
    sort: Sort = "serial"
    descending: bool = False

    def reversed(self) -> Order:
        return replace(self, descending=not self.descending)


async def listing(
    conn: Connection,
    flt: SensorFilter,
    order: Order,
    *,
    after: Cursor | None,
    offset: int,
    limit: int,
    cap: int,
    grams: Sequence[str] = (),
    candidates: float = math.inf,
) -> tuple[list[Record], int, bool]:
    """A page (as `page` reads it) and the listing's total (as `total` counts it), of one
    snapshot: the far half of a listing is located from the total, which would otherwise
    drift between the two while statuses change. `conn` must have LISTING_SESSION.

    One statement reads both (the page's rows are not read when the total is 0: a search
    matching nothing would otherwise walk a whole index), with no transaction. Deep offsets
    take a transaction (their page depends on the total), and a page past the end counts its
    total afterwards (no row carries it). `candidates`: how many sensors the trigram index is
    expected to return for `grams` (`GramStats.candidates`), see `_narrowed`.

    A search expected to return more than NARROWED_CANDIDATES_MAX times the cap's candidates
    (or an unknown number: no statistics yet) is counted first, through the index, up to the
    cap, in a transaction as a deep offset is; its page then asks the index only if that
    count is exact. Past the cap, matches are
    common enough that the page is found soon along its order's index, where the index would
    return every candidate first (the ids of 100,000 to look up one by one); below it, the
    estimate was wrong (correlated trigrams, other filters) and walking the order could read
    the whole fleet for one page.
    """
    few = candidates <= NARROWED_CANDIDATES_MAX * cap
    if (after is None and offset >= ANCHOR_EVERY) or (grams and not few):
        async with conn.transaction(isolation="repeatable_read"):
            n, exact = await total(conn, flt, cap=cap, grams=grams)
            rows = (
                await page(
                    conn,
                    flt,
                    order,
                    after=after,
                    offset=offset,
                    limit=limit,
                    total=n if exact else None,
                    grams=grams if exact else (),
                )
                if n
                else []
            )
        return rows, n, exact
    if grams and after is None:
        records = await _narrowed(conn, flt, order, offset, limit, grams)
    else:
        records = await _select(conn, flt, order, after, offset, limit, False, grams, cap)
    if records:
        n, exact = _bounded(flt, records[0]["total"], cap)
        return records, n, exact
    if after is None and offset == 0:
        return [], 0, True  # a first page holds a row whenever the total is not 0
    n, exact = await total(conn, flt, cap=cap, grams=grams)
    return [], n, exact


async def page(
    conn: Connection,
    flt: SensorFilter,
    order: Order,
    *,
    after: Cursor | None,
    offset: int,
    limit: int,
    total: int | None = None,
    grams: Sequence[str] = (),
) -> list[Record]:
    """Up to `limit` sensors in `order` (ties by serial): those after `after`, skipping
    `offset` more. Each row holds the LISTED columns (a page is encoded straight from them:
    building a `Listing` of each cost more CPU than reading the page) and `sort_key`, its sort
    key as text (for the next cursor).

    Cursor pages cost O(limit). Deep offsets are shortened: the unfiltered listing by serial
    starts from the nearest page anchor (< ANCHOR_EVERY rows to skip); a listing whose exact
    `total` is known reads its far half backwards (the last page is as cheap as the first),
    so only the middle of a listing costs O(offset). `grams`: see `SensorFilter.where`.
    """
    if after is None and offset >= ANCHOR_EVERY:
        if flt == SensorFilter() and order == Order():
            anchor = await _anchor(conn, offset)
            if anchor is not None:
                position, serial = anchor
                return await _select(
                    conn, flt, order, Cursor(serial, serial), offset - position, limit, True, grams
                )
        elif total is not None and offset > total - offset:
            end = min(offset + limit, total)
            if end <= offset:
                return []
            rows = await _select(
                conn, flt, order.reversed(), None, total - end, end - offset, False, grams
            )
            return rows[::-1]
    return await _select(conn, flt, order, after, offset, limit, False, grams)


async def _select(
    conn: Connection,
    flt: SensorFilter,
    order: Order,
    after: Cursor | None,
    offset: int,
    limit: int,
    inclusive: bool,
    grams: Sequence[str],
    cap: int | None = None,
) -> list[Record]:
    """With `cap`, each row also holds the listing's `total` (see `_counting`), counted first
    in the same statement; when it is 0, PostgreSQL's one-time filter reads no row at all."""
    key, key_type = _KEYS[order.sort]
    conditions, args = flt.where(sort=order.sort, grams=grams)
    if after is not None:
        compare = ("<" if order.descending else ">") + ("=" if inclusive else "")
        if order.sort == "serial":
            args.append(after.serial)
            conditions.append(f"serial {compare} ${len(args)}")
        else:
            args += [after.key, after.serial]
            n = len(args)
            conditions.append(f"({key}, serial) {compare} (${n - 1}::text::{key_type}, ${n})")
    # A site's rows are read, then sorted (OFFSET 0 keeps the planner from merging the two):
    # the sort key's index read in order kept what it met of the site, ~250 ms at a million
    # sensors when the first rows in that order had no site. Sorting costs O(the site's
    # sensors); an index by (site, key) per order would cost every sensor coming online (see
    # migration 0016).
    by_site = flt.site is not None and order.sort != "serial"
    sorted_by = "order_key" if by_site else key
    counted = ""
    columns = f"{_COLUMNS}, ({sorted_by})::text AS sort_key"
    if cap is not None:
        counting, counting_args = _counting(flt, cap, grams, len(args) + 1)
        args += counting_args
        counted = f"WITH counted AS MATERIALIZED ({counting}) "
        columns += ", (SELECT n FROM counted) AS total"
        conditions.append("(SELECT n FROM counted) > 0")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    source = "sensor"
    if by_site:
        source = f"(SELECT *, {key} AS order_key FROM sensor {where} OFFSET 0) AS site_rows"
        where = ""
    args += [offset, limit]
    try:
        return await conn.fetch(
            f"{counted}SELECT {columns} FROM {source} {where} "
            f"ORDER BY {_order_by(order, sorted_by)} OFFSET ${len(args) - 1} LIMIT ${len(args)}",
            *args,
        )
    except asyncpg.DataError:
        # A cursor's key is cast back as the statement reads it, so PostgreSQL is the judge
        # of one edited (no timestamp, an offset past ±15:59, a NUL): not a 500.
        if after is None:
            raise
        raise Invalid("cursor is not one this API returned", code="invalid_cursor") from None


def _order_by(order: Order, key: str, serial: str = "serial") -> str:
    """ORDER BY's terms: the sort's `key`, then `serial` for ties (the key of `sort=serial`)."""
    direction = "DESC" if order.descending else ""
    ties = "" if order.sort == "serial" else f", {serial} {direction}"
    return f"{key} {direction}{ties}"


async def _narrowed(
    conn: Connection,
    flt: SensorFilter,
    order: Order,
    offset: int,
    limit: int,
    grams: Sequence[str],
) -> list[Record]:
    """A page (not after a cursor) of a search the trigram index narrows to few candidates,
    each row with the listing's `total` (every match, past the cap).

    The page reads and sorts every match anyway, and counting them apart read up to `cap` of
    them a second time; so the matches are read once, as (id, key, serial), counted and sorted
    from there, and only the page's rows are read whole. At a million sensors `q=0099`
    (11,300 matches) took 8-13 ms so, 11 ms as a window over whole rows (`count(*) OVER ()`),
    13-15 ms with the count apart. Never for many candidates, where a page stops early in
    the key's index: `q=000`, 100,000 candidates, took 84-135 ms counted this way against
    10-36 ms.

    Sorted by serial, a search alone needs nothing of its matches but what their search rows
    hold: only the page's sensors are read (each match read by id in `sensor` was most of
    `q=0099`'s time: 20 of 36 ms on PostgreSQL 15 at a million)."""
    key = _KEYS[order.sort][0]
    if order.sort == "serial" and flt == SensorFilter(q=flt.q):
        args: list[object] = [_containing(flt.q or ""), list(grams)]
        matched = _searched("$1", "$2", "id, serial AS k, serial")
    else:
        conditions, args = flt.where(sort=order.sort, grams=grams)
        matched = f"SELECT id, {key} AS k, serial FROM sensor WHERE {' AND '.join(conditions)}"
    args += [offset, limit]
    n = len(args)
    return await conn.fetch(
        f"WITH matched AS MATERIALIZED ({matched}), "
        f"page AS (SELECT id, k, serial FROM matched ORDER BY {_order_by(order, 'k')} "
        f"OFFSET ${n - 1} LIMIT ${n}) "
        f"SELECT {_qualified(LISTED, 's')}, (p.k)::text AS sort_key, "
        "(SELECT count(*) FROM matched) AS total "
        f"FROM page p JOIN sensor s ON s.id = p.id ORDER BY {_order_by(order, 'p.k', 'p.serial')}",
        *args,
    )


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
    SELECT id, serial, row_number() OVER (ORDER BY serial) - 1 AS position
    FROM sensor WHERE retired_at IS NULL
), anchors AS (
    INSERT INTO sensor_anchor (position, serial)
    SELECT position, serial FROM ranked WHERE position % $1 = 0
)
INSERT INTO sensor_anchor_basis (set_version)
SELECT n FROM sensor_set_version
ON CONFLICT (only_row) DO UPDATE SET set_version = excluded.set_version
"""


async def _anchor(conn: Connection, offset: int) -> tuple[int, str] | None:
    """The last anchor at or before `offset`; None while the anchors are stale (sensors were
    provisioned, retired or removed; `rebuild_anchors` runs in the background, never in a
    request)."""
    row = await conn.fetchrow(_ANCHOR_AT, offset)
    assert row is not None  # one row, whatever the tables hold (FROM (SELECT 1))
    if not row["fresh"] or row["position"] is None:
        return None
    return row["position"], row["serial"]


async def rebuild_anchors(conn: Connection) -> bool:
    """Rebuild the page anchors if they are stale; whether this call rebuilt them (False:
    fresh, or another connection holds the rebuild's lock). A full ordered scan: ~1 s at a
    million sensors, so a background task's job."""
    row = await conn.fetchrow(_ANCHOR_AT, 0)
    assert row is not None
    if row["fresh"]:
        return False
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _ANCHOR_LOCK):
            return False
        await conn.execute("DELETE FROM sensor_anchor")
        await conn.execute(_REBUILD_ANCHORS, ANCHOR_EVERY)
    return True


async def total(
    conn: Connection, flt: SensorFilter, *, cap: int, grams: Sequence[str] = ()
) -> tuple[int, bool]:
    """(how many sensors match, whether that number is exact).

    Status, version and site filters are counted from `fleet_count`: exact, O(1). A search
    (`q`) or the retired sensors are counted among at most `cap` + 1 matches: when there are
    more, the answer is `cap` and not exact (a lower bound).
    """
    counting, args = _counting(flt, cap, grams)
    return _bounded(flt, await conn.fetchval(counting, *args), cap)


def counted_by_cap(flt: SensorFilter) -> bool:
    """Whether the listing's total is counted among at most the cap's matches (`total`)."""
    return flt.q is not None or flt.status == "retired"


def _counting(
    flt: SensorFilter, cap: int, grams: Sequence[str], first_param: int = 1
) -> tuple[str, list[object]]:
    """The statement `total` runs (one row, `n`), its parameters numbered from `first_param`."""
    if not counted_by_cap(flt):
        status, version, site = (f"${first_param + i}::text" for i in range(3))
        return (
            "SELECT coalesce(sum(n), 0)::bigint AS n FROM fleet_count "
            f"WHERE ({status} IS NULL OR status = {status}) "
            f"AND ({version} IS NULL OR version = {version}) AND ({site} IS NULL OR site = {site})",
            [flt.status, flt.version, flt.site],
        )
    rest = replace(flt, q=None)
    if flt.q is not None and flt.status != "retired" and (grams or rest == SensorFilter()):
        # A search is counted in its own rows, through the index when there are `grams`, and
        # joined to the sensor rows only for other filters: each match is looked up as it is
        # counted, so the rows read stop at the cap (the index's entries are read whole
        # first, GIN answering in bitmaps only).
        args: list[object] = [_containing(flt.q)]
        if grams:
            args.append(list(grams))
        found = f"${first_param + 1}" if grams else None
        source = f"({_searched(f'${first_param}', found)}) AS searched"
        if rest != SensorFilter():
            conditions, more = rest.where(first_param + len(args))
            args += more
            source += f" JOIN sensor USING (id) WHERE {' AND '.join(conditions)}"
    else:
        conditions, args = flt.where(first_param, grams=grams)
        source = f"sensor WHERE {' AND '.join(conditions)}"
    args.append(cap + 1)
    return (
        f"SELECT count(*) AS n FROM (SELECT 1 FROM {source} "
        f"LIMIT ${first_param + len(args) - 1}) AS matching",
        args,
    )


def _bounded(flt: SensorFilter, n: int, cap: int) -> tuple[int, bool]:
    if not counted_by_cap(flt):
        return n, True
    return (n, True) if n <= cap else (cap, False)


@dataclass(frozen=True, slots=True)
class Detail:
    listing: Listing
    created_at: datetime


async def get(conn: Connection, serial: str) -> Detail | None:
    """The sensor with this serial, retired or not."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, retired_at IS NOT NULL AS retired, created_at FROM sensor "
        "WHERE serial = $1",
        serial,
    )
    if row is None:
        return None
    return Detail(replace(_listing(row), retired=row["retired"]), row["created_at"])


async def events(
    conn: Connection, sensor_id: int, *, before: tuple[datetime, int] | None, limit: int
) -> list[EventRow]:
    """The sensor's transitions, newest first, older than `before` (at, id): a keyset page of
    the (sensor_id, at) index."""
    if before is None:
        rows = await conn.fetch(
            "SELECT id, at, kind, old, new FROM sensor_event WHERE sensor_id = $1 "
            "ORDER BY at DESC, id DESC LIMIT $2",
            sensor_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            "SELECT id, at, kind, old, new FROM sensor_event WHERE sensor_id = $1 "
            "AND (at, id) < ($2, $3) ORDER BY at DESC, id DESC LIMIT $4",
            sensor_id,
            *before,
            limit,
        )
    return [EventRow(*r) for r in rows]


async def status_events_since(
    conn: Connection, sensor_id: int, seconds: float
) -> tuple[datetime, list[EventRow]]:
    """The database's now, and the sensor's online/offline events of the last `seconds`,
    oldest first (what availability is computed from)."""
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch(
        "SELECT id, at, kind, old, new FROM sensor_event WHERE sensor_id = $1 "
        "AND kind IN ('online', 'offline') AND at > $2::timestamptz - make_interval(secs => $3) "
        "ORDER BY at, id",
        sensor_id,
        now,
        seconds,
    )
    return now, [EventRow(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class FleetCount:
    status: Status
    version: str | None
    n: int


async def fleet_counts(conn: Connection) -> list[FleetCount]:
    """Sensors per (status, version) from the maintained counters: O(versions x sites), not
    O(rows). Retired sensors are not counted."""
    rows = await conn.fetch(
        "SELECT status, version, sum(n)::bigint AS n FROM fleet_count "
        "GROUP BY status, version HAVING sum(n) <> 0"
    )
    return [FleetCount(r["status"], r["version"] or None, r["n"]) for r in rows]


async def retired_count(conn: Connection) -> int:
    """Retired sensors, from their maintained counter (migration 0013)."""
    n: int = await conn.fetchval("SELECT n FROM retired_count")
    return n


@dataclass(frozen=True, slots=True)
class SiteCount:
    site: str | None
    status: Status
    n: int


async def site_counts(conn: Connection) -> list[SiteCount]:
    """Sensors per (site, status) from the maintained counters."""
    rows = await conn.fetch(
        "SELECT site, status, sum(n)::bigint AS n FROM fleet_count "
        "GROUP BY site, status HAVING sum(n) <> 0 ORDER BY site, status"
    )
    return [SiteCount(r["site"] or None, r["status"], r["n"]) for r in rows]
