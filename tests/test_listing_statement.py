"""A listing's page and total read by one statement (`db.sensors.listing`), against what the
sensors table holds: where one statement could go wrong (nothing matches, past the end, a
search's capped count, the retired sensors), and the session its connections run in."""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg
import pytest
import trio

from droneshield.db import seed
from droneshield.db.pool import Connection, Record, acquire, open_pool
from droneshield.db.sensors import (
    LISTED,
    LISTING_SESSION,
    NARROWED_CANDIDATES_MAX,
    Cursor,
    Order,
    SensorFilter,
    listing,
    page,
    total,
    trigrams,
)

from .support.processes import eventually
from .support.releases import add_software

CAP = 5  # small, so that searches and the retired sensors pass it
LIMIT = 4
FILTERS = [
    SensorFilter(),
    SensorFilter(status="online"),
    SensorFilter(status="offline"),  # none
    SensorFilter(site="north"),
    SensorFilter(site="nowhere"),
    SensorFilter(status="online", site="north"),
    SensorFilter(q="DS-"),  # more than CAP
    SensorFilter(q="00000003"),  # fewer
    SensorFilter(q="mast 1"),  # labels
    SensorFilter(q="zz9"),  # none
    SensorFilter(status="online", q="DS-"),  # more than CAP
    SensorFilter(site="north", q="mast"),  # fewer
    SensorFilter(status="offline", q="mast 1"),  # none
    SensorFilter(status="retired"),  # more than CAP
    SensorFilter(status="retired", q="0000001"),  # fewer
    SensorFilter(status="retired", site="nowhere"),  # none
]


class Counting:
    """The connection, counting the statements sent through it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queries: list[str] = []
        self.args: list[tuple[object, ...]] = []

    @property
    def statements(self) -> int:
        return len(self.queries)

    async def fetch(self, query: str, *args: object) -> list[Record]:
        self.queries.append(query)
        self.args.append(args)
        return await self.conn.fetch(query, *args)

    async def fetchval(self, query: str, *args: object) -> object:
        self.queries.append(query)
        self.args.append(args)
        return await self.conn.fetchval(query, *args)

    def transaction(self, **options: object) -> object:
        return self.conn.transaction(**options)


@pytest.fixture
async def fleet(db):  # type: ignore[no-untyped-def]
    """30 sensors: a third online, a quarter at site north, half labelled, a fifth retired."""
    await seed.seed(db, 30)
    await db.execute(
        "UPDATE sensor SET online = id % 3 = 0, last_seen_at = CASE WHEN id % 3 = 0 THEN now() END,"
        " status_changed_at = CASE WHEN id % 3 = 0 THEN now() END,"
        " site = CASE WHEN id % 4 = 0 THEN 'north' END,"
        " label = CASE WHEN id % 2 = 0 THEN 'Mast ' || id END,"
        " retired_at = CASE WHEN id % 5 = 0 THEN now() END"
    )


async def _matching(db, flt: SensorFilter) -> list[str]:  # type: ignore[no-untyped-def]
    """The serials `flt` lists, in serial order, filtered here rather than in SQL."""
    rows = await db.fetch(
        "SELECT serial, label, site, sensor_status(online, last_seen_at) AS status, "
        "retired_at IS NOT NULL AS retired FROM sensor ORDER BY serial"
    )

    def listed(row: Record) -> bool:
        q = (flt.q or "").lower()
        return (
            row["retired"] == (flt.status == "retired")
            and flt.status in (None, "retired", row["status"])
            and flt.site in (None, row["site"])
            and any(q in (text or "").lower() for text in (row["serial"], row["label"]))
        )

    return [row["serial"] for row in rows if listed(row)]


def _shown(rows: Sequence[Record]) -> list[tuple[object, ...]]:
    return [tuple(row[column] for column in (*LISTED, "sort_key")) for row in rows]


def _counted(flt: SensorFilter, matching: Sequence[str]) -> tuple[int, bool]:
    """The total the API promises: exact, except a search's or the retired sensors' past CAP."""
    if (flt.q is not None or flt.status == "retired") and len(matching) > CAP:
        return CAP, False
    return len(matching), True


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
async def test_pages_and_totals_by_offset_match_the_table(db, fleet, flt):
    expected = await _matching(db, flt)
    with trio.fail_after(10):
        for offset in sorted({0, LIMIT, len(expected) - 1, len(expected), len(expected) + 7}):
            if offset < 0:
                continue
            rows, n, exact = await listing(
                db, flt, Order(), after=None, offset=offset, limit=LIMIT, cap=CAP
            )
            assert [r["serial"] for r in rows] == expected[offset : offset + LIMIT], offset
            assert (n, exact) == _counted(flt, expected), offset


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
async def test_pages_and_totals_by_cursor_match_the_table_to_past_the_end(db, fleet, flt):
    expected = await _matching(db, flt)
    walked: list[str] = []
    after = None
    with trio.fail_after(10):
        while True:
            rows, n, exact = await listing(
                db, flt, Order(), after=after, offset=0, limit=LIMIT, cap=CAP
            )
            assert (n, exact) == _counted(flt, expected)
            if not rows:
                break
            walked += [r["serial"] for r in rows]
            after = Cursor(rows[-1]["sort_key"], rows[-1]["serial"])
    assert walked == expected


async def _first_page(
    counting: Counting, flt: SensorFilter, order: Order
) -> tuple[list[Record], int, bool]:
    return await listing(
        counting,  # type: ignore[arg-type]
        flt,
        order,
        after=None,
        offset=0,
        limit=LIMIT,
        cap=CAP,
    )


@pytest.mark.parametrize("sort", ["serial", "status_changed_at", "last_seen_at", "version"])
@pytest.mark.parametrize("descending", [False, True])
async def test_one_statement_reads_what_the_total_and_the_page_read_apart(
    db, fleet, sort, descending
):
    order = Order(sort, descending)
    with trio.fail_after(20):
        for flt in FILTERS:
            n, exact = await total(db, flt, cap=CAP)
            apart = await page(db, flt, order, after=None, offset=0, limit=LIMIT)
            counting = Counting(db)
            together = await _first_page(counting, flt, order)
            assert (_shown(together[0]), *together[1:]) == (_shown(apart), n, exact), flt
            assert counting.statements == 1, flt


async def _plan(db, flt: SensorFilter, order: Order) -> str:  # type: ignore[no-untyped-def]
    """The plan of the statement `listing` sends for a first page, as it ran (`EXPLAIN
    ANALYZE`: a listing writes nothing)."""
    counting = Counting(db)
    await _first_page(counting, flt, order)
    [query], [args] = counting.queries, counting.args
    return "\n".join(r[0] for r in await db.fetch(f"EXPLAIN ANALYZE {query}", *args))


@pytest.mark.parametrize("descending", [False, True])
async def test_online_sensors_by_status_change_skip_no_offline_ones(db, descending):
    """A third of the fleet has just gone offline (or, ascending, went offline first): along
    the key's index of every sensor a first page of online ones walked past all of them
    (10,250 rows filtered at a million after a wave went offline); migration 0023 gives online
    sensors an index of their own, as 0016 did offline ones, and the page filters none."""
    await seed.seed(db, 3000)
    offline = "id <= 1000" if descending else "id > 2000"
    await db.execute(
        f"UPDATE sensor SET online = NOT ({offline}), last_seen_at = now(),"
        " status_changed_at = now() - id * interval '1 second'"
    )
    await db.execute("ANALYZE sensor")
    with trio.fail_after(10):
        plan = await _plan(
            db, SensorFilter(status="online"), Order("status_changed_at", descending)
        )
    assert "Rows Removed by Filter" not in plan, plan
    assert "using sensor_online_changed_serial" in plan, plan


@pytest.mark.parametrize("sort", ["status_changed_at", "version"])
@pytest.mark.parametrize("descending", [False, True])
async def test_never_seen_sensors_sorted_by_a_key_are_read_in_order(db, sort, descending):
    """A hundredth of the fleet never seen: the planner knows how many there are (two
    conditions taken as independent made ~70 expected of 9,000 at a million, and it read and
    sorted them all), and walks an index in order for a first page."""
    await seed.seed(db, 3000)
    await add_software(db, "1.0.0")
    await db.execute(
        "UPDATE sensor SET online = id % 10 <> 0, last_seen_at = now(),"
        " status_changed_at = now() - id * interval '1 second', version = '1.0.0',"
        " version_key = (SELECT version_key FROM software) WHERE id % 100 <> 1"
    )
    await db.execute("ANALYZE sensor")
    with trio.fail_after(10):
        plan = await _plan(db, SensorFilter(status="never"), Order(sort, descending))
    scan = next(line for line in plan.splitlines() if " on sensor " in line)
    expected = int(re.search(r"rows=(\d+)", scan)[1])  # type: ignore[index]
    assert expected >= 15, plan  # of 30
    assert "Sort" not in plan, plan


async def test_a_page_past_the_end_is_counted_apart(db, fleet):
    counting = Counting(db)
    with trio.fail_after(10):
        rows, n, exact = await listing(
            counting,  # type: ignore[arg-type]
            SensorFilter(q="DS-"),
            Order(),
            after=Cursor("DS-99999999", "DS-99999999"),
            offset=0,
            limit=LIMIT,
            cap=CAP,
        )
    assert (rows, n, exact) == ([], CAP, False)
    assert counting.statements == 2


async def test_listing_connections_plan_each_statement_and_are_lent_as_they_are(
    aio_loop, database_url
):
    """Custom plans and no JIT on the listing pool's connections only; a connection is lent
    again as it was left (not reset: no round trip), so a setting made on one outlives its use."""
    show = "SELECT current_setting('plan_cache_mode'), current_setting('jit')"
    with trio.fail_after(10):
        async with open_pool(database_url, size=1, session=LISTING_SESSION) as listings:
            async with acquire(listings) as conn:
                assert tuple(await conn.fetchrow(show)) == ("force_custom_plan", "off")  # type: ignore[arg-type]
                await conn.execute("SET application_name = 'kept'")
            async with acquire(listings) as again:
                assert again is conn
                assert await again.fetchval("SELECT current_setting('application_name')") == "kept"
        async with open_pool(database_url, size=1) as pool, acquire(pool) as conn:
            assert await conn.fetchval("SELECT current_setting('plan_cache_mode')") == "auto"


async def test_a_listing_connection_whose_use_failed_goes_back_to_asyncpg(aio_loop, database_url):
    """A failed or cancelled statement returns its connection to asyncpg's pool (which waits
    for the cancellation and resets the session); the next use gets a working one, with the
    listing session; and the pool closes at once, the lent connections given back."""
    with trio.fail_after(10):
        async with open_pool(database_url, size=1, session=LISTING_SESSION) as listings:
            async with acquire(listings) as conn:
                await conn.execute("SET application_name = 'dropped'")
            with pytest.raises(asyncpg.UndefinedTableError):
                async with acquire(listings) as conn:
                    await conn.fetch("SELECT * FROM no_such_table")
            async with acquire(listings) as conn:
                assert await conn.fetchval("SELECT current_setting('application_name')") == ""
            with trio.move_on_after(0.2):
                async with acquire(listings) as conn:
                    await conn.execute("SET application_name = 'dropped'")
                    await conn.fetch("SELECT pg_sleep(60)")
            async with acquire(listings) as conn:
                assert await conn.fetchval("SELECT current_setting('application_name')") == ""
                assert await conn.fetchval("SELECT current_setting('plan_cache_mode')") == (
                    "force_custom_plan"
                )
            closing = trio.current_time()
        assert trio.current_time() - closing < 1  # not CLOSE_TIMEOUT: nothing left lent


async def test_a_listing_connection_lost_while_idle_is_replaced(aio_loop, database_url, db):
    """As asyncpg's pool does: a connection the server closed while it was not in use is
    not lent again."""
    with trio.fail_after(10):
        async with open_pool(database_url, size=1, session=LISTING_SESSION) as listings:
            async with acquire(listings) as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
            await db.execute("SELECT pg_terminate_backend($1)", pid)

            async def noticed() -> bool:
                return bool(conn.is_closed())

            await eventually(noticed)
            async with acquire(listings) as again:
                assert await again.fetchval("SELECT pg_backend_pid()") != pid


SEARCHES = [f for f in FILTERS if f.q is not None]


@pytest.mark.parametrize("candidates", [0, CAP * NARROWED_CANDIDATES_MAX + 1], ids=["few", "many"])
@pytest.mark.parametrize("flt", SEARCHES, ids=repr)
async def test_searches_through_the_trigram_index_match_the_table(db, fleet, flt, candidates):
    """Through the search's trigram index (migration 0025): first pages, pages past the
    end and cursor pages agree with the table, whether the index is expected to return few
    candidates (a first page then reads the matches once, counts and sorts them) or many (the
    count through the index comes first, and the page asks the index only if the count is
    below the cap: otherwise it walks its order)."""
    grams = trigrams(flt.q or "")[:1]  # the index asked for a trigram every search holds
    expected = await _matching(db, flt)
    with trio.fail_after(10):
        for offset in sorted({0, LIMIT, len(expected), len(expected) + 7}):
            counting = Counting(db)
            rows, n, exact = await listing(
                counting,  # type: ignore[arg-type]
                flt,
                Order(),
                after=None,
                offset=offset,
                limit=LIMIT,
                cap=CAP,
                grams=grams,
                candidates=candidates,
            )
            assert [r["serial"] for r in rows] == expected[offset : offset + LIMIT], offset
            assert (n, exact) == _counted(flt, expected), offset
            few = candidates <= CAP * NARROWED_CANDIDATES_MAX
            read_once = "WITH matched" in counting.queries[0]
            assert read_once == few, offset
            if few and flt == SensorFilter(q=flt.q):  # by serial: the search rows alone
                assert "serial AS k, serial FROM sensor_search" in counting.queries[0]
            if not few and flt.status != "retired":
                # Counted through the index first; the page asks it only below the cap.
                count, *rest = counting.queries
                assert "sensor_grams(serial, label) @>" in count
                assert len(rest) == (n > 0)  # nothing matched: no page read
                assert ("sensor_grams(serial, label) @>" in "".join(rest)) == (n > 0 and exact)
        rows, n, exact = (
            await listing(
                db,
                flt,
                Order(),
                after=Cursor(*[expected[0]] * 2),
                offset=0,
                limit=LIMIT,
                cap=CAP,
                grams=grams,
                candidates=candidates,
            )
            if expected
            else ([], 0, True)
        )
        assert [r["serial"] for r in rows] == expected[1 : 1 + LIMIT]
        assert (n, exact) == _counted(flt, expected)


@pytest.mark.parametrize("sort", ["serial", "status_changed_at", "last_seen_at", "version"])
@pytest.mark.parametrize("descending", [False, True])
async def test_a_search_with_few_candidates_matches_the_page_and_total_read_apart(
    db, fleet, sort, descending
):
    """The narrowed search's one read (every match counted, then capped as `total` caps it)
    against the page and the total read apart, in every order, first and later pages."""
    order = Order(sort, descending)
    with trio.fail_after(20):
        for flt in SEARCHES:
            grams = trigrams(flt.q or "")[:1]
            n, exact = await total(db, flt, cap=CAP, grams=grams)
            for offset in (0, LIMIT):
                apart = await page(
                    db, flt, order, after=None, offset=offset, limit=LIMIT, grams=grams
                )
                rows, m, read_exact = await listing(
                    db,
                    flt,
                    order,
                    after=None,
                    offset=offset,
                    limit=LIMIT,
                    cap=CAP,
                    grams=grams,
                    candidates=0,
                )
                assert _shown(rows) == _shown(apart), (flt, offset)
                assert (m, read_exact) == (n, exact), (flt, offset)
