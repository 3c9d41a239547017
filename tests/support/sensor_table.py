"""Checks of the `sensor` table after bulk inserts (db/bulk.py rebuilds its indexes and those
of its search rows, `sensor_search`): which index objects they have, that the counters its
triggers maintain match a count of the rows, and that the planner serves a lookup from an
index."""

from __future__ import annotations

from typing import Any

Conn = Any  # a test's connection (triopg's proxy, untyped)

_INDEXES = """
SELECT c.relname, i.indexrelid::bigint AS oid, pg_get_indexdef(i.indexrelid) AS definition,
       i.indisvalid AND i.indisready AS usable
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid IN ('sensor'::regclass, 'sensor_search'::regclass)
"""


async def indexes(conn: Conn) -> dict[str, tuple[int, str]]:
    """Each index of `sensor` and `sensor_search`: its object id (a rebuilt index has a new
    one) and definition. Every index must be usable."""
    rows = await conn.fetch(_INDEXES)
    assert all(r["usable"] for r in rows)
    return {r["relname"]: (r["oid"], r["definition"]) for r in rows}


def rebuilt(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> set[str]:
    """The indexes built again between two snapshots, which must define the same indexes."""
    assert {n: d for n, (_, d) in after.items()} == {n: d for n, (_, d) in before.items()}
    return {n for n in after if after[n][0] != before[n][0]}


async def assert_counters_exact(conn: Conn) -> None:
    counted = await conn.fetch(
        "SELECT sensor_status(online, last_seen_at) AS status, coalesce(version, '') AS version, "
        "coalesce(site, '') AS site, count(*) AS n FROM sensor WHERE retired_at IS NULL "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    kept = await conn.fetch(
        "SELECT status, version, site, n FROM fleet_count WHERE n <> 0 ORDER BY 1, 2, 3"
    )
    assert [tuple(r) for r in kept] == [tuple(r) for r in counted]
    retired = await conn.fetchval("SELECT count(*) FROM sensor WHERE retired_at IS NOT NULL")
    assert await conn.fetchval("SELECT n FROM retired_count") == retired


async def plan(conn: Conn, query: str, *args: object) -> str:
    """The plan of `query` with the table's statistics fresh."""
    await conn.execute("ANALYZE sensor, sensor_search")
    rows = await conn.fetch(f"EXPLAIN {query}", *args)
    return "\n".join(r[0] for r in rows)


KEPT = frozenset({"sensor_pkey"})  # the index bulk.py does not rebuild


def lookups(names: dict[str, tuple[int, str]]) -> list[tuple[str, str]]:
    """(index, query it must serve): by site, and a substring search by the trigram index."""
    assert "sensor_search_grams" in names
    return [
        ("sensor_site_serial", "SELECT serial FROM sensor WHERE site = 'zz' ORDER BY serial"),
        (
            "sensor_search_grams",
            "SELECT id FROM sensor_search WHERE sensor_grams(serial, label) @> '{zzz}'",
        ),
    ]


def search_indexes(names: dict[str, tuple[int, str]]) -> set[str]:
    """The search (GIN) indexes among `names`: those a large insert leaves to build after it."""
    return {n for n, (_, definition) in names.items() if " USING gin " in definition}
