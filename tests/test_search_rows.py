"""The search's own rows (`sensor_search`, migration 0025): they follow what operators change
(provisioning, labels, retirement, an import), and nothing a sensor reports writes them, so a
transition never touches the trigram index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from droneshield.db import bulk, migrate, presence, seed
from droneshield.db import sensors as db_sensors
from droneshield.db.pool import connect
from droneshield.db.reports import apply_reports
from droneshield.db.sensors import SensorFilter, trigrams

from .support.releases import add_software

ROWS = "SELECT serial, label FROM sensor_search ORDER BY serial"
PLACES = "SELECT serial, ctid::text AS place, xmin::text AS writer FROM sensor_search ORDER BY 1"


async def _rows(db) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    return [(r["serial"], r["label"]) for r in await db.fetch(ROWS)]


async def _search(api, **params: str) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    response = await api.get("/sensors", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return [i["serial"] for i in body["items"]], body["total"]


async def test_search_rows_follow_provisioning_labels_retirement_and_return(api, db):
    with trio.fail_after(10):
        await api.post(
            "/sensors",
            json={"sensors": [{"serial": "SR-1", "label": "Mast north"}, {"serial": "SR-2"}]},
        )
        added = await _rows(db)
        assert (await api.patch("/sensors/SR-2", json={"label": "Roof"})).status_code == 200
        assert (await api.delete("/sensors/SR-1")).status_code == 204
        changed = await _rows(db)
        roof = await _search(api, q="ROOF")
        mast = await _search(api, q="mast")
        retired = await _search(api, q="mast", status="retired")
        await api.post("/sensors", json={"sensors": [{"serial": "SR-1", "label": "Mast south"}]})
        back = await _rows(db)
        returned = await _search(api, q="mast s")
        await db.execute("DELETE FROM sensor WHERE serial = 'SR-2'")  # by hand
        removed = await _rows(db)
        await db.execute("TRUNCATE sensor CASCADE")
        emptied = await _rows(db)
    assert added == [("SR-1", "Mast north"), ("SR-2", None)]
    assert changed == [("SR-2", "Roof")]
    assert roof == (["SR-2"], 1)
    assert mast == ([], 0)  # retired: not among the searched
    assert retired == (["SR-1"], 1)  # searched among the retired ones
    assert back == [("SR-1", "Mast south"), ("SR-2", "Roof")]
    assert returned == (["SR-1"], 1)
    assert removed == [("SR-1", "Mast south")]
    assert emptied == []


async def test_a_seeded_fleet_has_its_search_rows(db):
    """Seeding copies straight into `sensor` (db/bulk.py): the statement's trigger adds the
    search rows of the whole copy."""
    await seed.seed(db, 25_000)  # a rebuild: more than bulk.REBUILD_MIN
    assert await db.fetchval("SELECT count(*) FROM sensor_search") == 25_000
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sensor s JOIN sensor_search t USING (id) "
            "WHERE t.serial = s.serial AND t.label IS NOT DISTINCT FROM s.label"
        )
        == 25_000
    )


async def test_reports_and_expiry_never_write_the_search_rows(db, sensors):
    """Sensors coming online, changing version and going offline (the batch and expiry
    statements) leave their search rows as they were: the trigram index is not written. And
    `sensor` itself has no trigram index left for a transition to write."""
    await add_software(db, "1.0.0")
    before = await db.fetch(PLACES)
    for version in (None, "1.0.0"):
        await apply_reports(db, sensors, [version] * len(sensors))
    ids = [r["id"] for r in await db.fetch("SELECT id FROM sensor ORDER BY id")]
    expiry = await presence.expire(db, ids, 0.0)
    assert len(expiry.offline) == len(sensors)
    assert await db.fetch(PLACES) == before
    assert not await db.fetchval(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = 'sensor'::regclass "
        "AND a.amname = 'gin'"
    )


async def _migrated_before_search_rows(url: str, tmp_path: Path) -> None:
    """Migrate `url` up to the migration before 0025, as a database of the previous release."""
    for number, path in migrate.migration_files():
        if number < 25:
            shutil.copy(path, tmp_path / path.name)
    async with connect(url) as conn:
        await migrate.migrate(conn, tmp_path)


@pytest.mark.parametrize("fleet", [100, 25_000], ids=["small", "large"])
async def test_the_migration_copies_the_text_of_sensors_not_retired(
    aio_loop, empty_database_url, tmp_path, fleet
):
    """A fleet stored before migration 0025 gets its search rows, the retired sensors left
    out; a small fleet's index is built at once, a large one's left to a daemon (built here
    as a daemon builds it), and searches find the same sensors either way."""
    await _migrated_before_search_rows(empty_database_url, tmp_path)
    async with connect(empty_database_url) as conn:
        await conn.execute(
            "INSERT INTO sensor (serial, label, retired_at) "
            "SELECT 'M-' || lpad(n::text, 6, '0'), CASE WHEN n % 2 = 0 THEN 'Mast ' || n END, "
            "CASE WHEN n % 10 = 0 THEN now() END FROM generate_series(1, $1) AS n",
            fleet,
        )
        await migrate.migrate(conn)
        copied = await conn.fetchval(
            "SELECT count(*) FROM sensor s JOIN sensor_search t USING (id) "
            "WHERE t.serial = s.serial AND t.label IS NOT DISTINCT FROM s.label"
        )
        assert await conn.fetchval("SELECT count(*) FROM sensor_search") == copied
        deferred = await conn.fetchval("SELECT array_agg(name) FROM deferred_index")
        built_at_once = await db_sensors.has_grams(conn)
        if deferred:
            assert await bulk.build_deferred(empty_database_url) == ["sensor_search_grams"]
        grams = trigrams("st 12")
        through_index, _ = await db_sensors.total(
            conn, SensorFilter(q="st 12"), cap=100_000, grams=grams
        )
        scanned, _ = await db_sensors.total(conn, SensorFilter(q="st 12"), cap=100_000)
    assert copied == fleet - fleet // 10
    assert (built_at_once, deferred) == (
        (True, None) if fleet < 20_000 else (False, ["sensor_search_grams"])
    )
    assert through_index == scanned > 0
