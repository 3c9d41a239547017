"""`droneshield sensors import` as a person runs it: a process reading a file or stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import trio

from droneshield.db import bulk, provisioning, seed
from droneshield.db.pool import connect
from droneshield.errors import SensorsConflict
from droneshield.provisioning import Numbered, Rows, SensorSpec
from droneshield.sensor_import import BATCH

from .support import sensor_table
from .support.locks import another_waits_for_a_lock
from .support.processes import eventually

CLI = (sys.executable, "-m", "droneshield", "sensors", "import")
# Ids the table's identity has handed out: rows copied into it and rolled back keep theirs.
_IDS_DRAWN = "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = 'sensor_id_seq'"


async def _import(
    database_url: str, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRONESHIELD_")}
    with trio.fail_after(60):
        return await trio.run_process(
            [*CLI, *args],
            env={**env, "DATABASE_URL": database_url},
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_import_is_idempotent_and_reads_stdin(db, database_url, tmp_path: Path):
    path = tmp_path / "fleet.csv"
    path.write_text(
        "serial,site,label\n" + "".join(f"IM-{n:05d},site-{n % 3},\n" for n in range(1000))
    )
    first = await _import(database_url, str(path))
    again = await _import(database_url, "-", stdin=path.read_bytes())
    assert first.returncode == 0, first.stderr
    assert first.stderr.decode().strip().splitlines()[-1].startswith("imported 1,000 sensors in ")
    assert "(1,000 new, 0 existing)" in first.stderr.decode()
    assert "(0 new, 1,000 existing)" in again.stderr.decode()
    sites = await db.fetch("SELECT site, sum(n) AS n FROM fleet_count GROUP BY site ORDER BY site")
    assert [(r["site"], r["n"]) for r in sites] == [
        ("site-0", 334),
        ("site-1", 333),
        ("site-2", 333),
    ]


async def test_a_large_import_into_a_small_fleet_rebuilds_indexes_under_the_same_rules(
    db, database_url, tmp_path: Path
):
    """Adding more sensors than there are takes the fast path (indexes built again after the
    insert, bulk.py; the search indexes after the commit, CONCURRENTLY): identical sensors
    still count as existing, a retired one comes back with its history, the counters stay
    exact, and importing again changes nothing."""
    await seed.seed(db, 1000)
    await provisioning.retire(db, "DS-00000005")
    path = tmp_path / "fleet.csv"
    path.write_text(
        "serial,site,label\n"
        + "".join(f"DS-{n:08d},,\n" for n in range(1, 1001))
        + "".join(f"IM-{n:06d},site-{n % 3},mast {n}\n" for n in range(bulk.REBUILD_MIN))
    )
    before = await sensor_table.indexes(db)
    first = await _import(database_url, str(path))
    assert first.returncode == 0, first.stderr
    assert f"({bulk.REBUILD_MIN + 1:,} new, 999 existing; search index left to" in (
        first.stderr.decode()
    )
    searching = sensor_table.search_indexes(before)
    assert set(before) - set(await sensor_table.indexes(db)) == searching
    assert set(await db.fetchval("SELECT array_agg(name) FROM deferred_index")) == searching
    assert await bulk.build_deferred(database_url)  # as a daemon does (search_index.py)
    assert await db.fetchval("SELECT count(*) FROM deferred_index") == 0
    after = await sensor_table.indexes(db)
    assert sensor_table.rebuilt(before, after) == set(before) - sensor_table.KEPT
    history = await db.fetch(
        "SELECT kind FROM sensor_event WHERE sensor_id = "
        "(SELECT id FROM sensor WHERE serial = 'DS-00000005') ORDER BY id"
    )
    assert [r["kind"] for r in history] == ["retired", "restored"]
    await sensor_table.assert_counters_exact(db)
    for index, query in sensor_table.lookups(after):
        assert index in await sensor_table.plan(db, query)
    again = await _import(database_url, str(path))
    assert f"(0 new, {bulk.REBUILD_MIN + 1000:,} existing)" in again.stderr.decode()
    assert sensor_table.rebuilt(after, await sensor_table.indexes(db)) == set()
    await provisioning.retire(db, "IM-000007")
    await db.execute("DELETE FROM sensor WHERE serial < 'IM-001000'")  # retired ones too
    await sensor_table.assert_counters_exact(db)


async def test_a_large_file_into_an_empty_fleet_is_copied_into_the_table_itself(
    db, database_url, tmp_path: Path
):
    """No staged copy (db/provisioning.fill): the rows go into `sensor` as they are read, so
    ids follow the file's order (a staged insert adds them in serial order); the same rows,
    indexes and counters as the staged path, which a second import (into a fleet no longer
    empty) takes, finding every sensor existing."""
    rows = bulk.REBUILD_MIN
    path = tmp_path / "fleet.csv"
    path.write_text(
        "serial, site, label\n"
        + "".join(f'FI-{n:06d}, site-{n % 7}, "mast, {n}"\n' for n in reversed(range(rows)))
        + f"FI-{rows:06d},,\n\n"
    )
    before = await sensor_table.indexes(db)
    first = await _import(database_url, str(path))
    assert first.returncode == 0, first.stderr
    assert f"({rows + 1:,} new, 0 existing; search index left to" in first.stderr.decode()
    by_id = await db.fetch("SELECT serial, site, label FROM sensor ORDER BY id LIMIT 2")
    assert [tuple(r) for r in by_id] == [
        (f"FI-{rows - 1:06d}", f"site-{(rows - 1) % 7}", f"mast, {rows - 1}"),
        (f"FI-{rows - 2:06d}", f"site-{(rows - 2) % 7}", f"mast, {rows - 2}"),
    ]
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE label IS NULL") == 1
    assert await bulk.build_deferred(database_url)
    after = await sensor_table.indexes(db)
    assert sensor_table.rebuilt(before, after) == set(before) - sensor_table.KEPT
    await sensor_table.assert_counters_exact(db)
    for index, query in sensor_table.lookups(after):
        assert index in await sensor_table.plan(db, query)
    again = await _import(database_url, str(path))
    assert f"(0 new, {rows + 1:,} existing)" in again.stderr.decode()


async def test_a_large_file_refused_in_an_empty_fleet_names_its_lines_and_stores_nothing(
    db, database_url, tmp_path: Path
):
    """Copied into the table as it is read, a file is still checked whole: a repeated serial
    (found when the serial's unique index cannot be built) and a broken row are named by their
    lines, and the table is left as it was, with its indexes."""
    plain = [f"RE-{n:06d}\n" for n in range(bulk.REBUILD_MIN)]
    before = await sensor_table.indexes(db)
    repeated = tmp_path / "repeated.csv"
    # The broken row is not copied: the copied rows' positions are not their indexes.
    repeated.write_text("serial\n\nRE-\x01\n" + "".join(plain) + "RE-000003\nRE-000002\n")
    broken = tmp_path / "broken.csv"
    broken.write_text("serial\n" + "".join(plain) + "RE-\x01\n")
    refused = await _import(database_url, str(repeated))
    assert refused.returncode == 1
    *named, last = refused.stderr.decode().splitlines()
    assert [line.split(": ", 2)[::2] for line in named] == [
        ["line 3", "serial 'RE-\\x01' must be 1 to 128 printable ASCII characters"],
        [f"line {bulk.REBUILD_MIN + 4}", "serial 'RE-000003' is already given in line 7"],
        [f"line {bulk.REBUILD_MIN + 5}", "serial 'RE-000002' is already given in line 6"],
    ]
    assert (
        last == f"droneshield: 3 of {bulk.REBUILD_MIN + 3:,} rows are invalid; nothing was stored"
    )
    drawn = await db.fetchval(_IDS_DRAWN)
    refused = await _import(database_url, str(broken))
    assert refused.returncode == 1
    first = refused.stderr.decode().splitlines()[0]
    assert first.startswith(f"line {bulk.REBUILD_MIN + 2}: invalid_serial: ")
    # Copied into the table, then rolled back (a staged file is refused before its insert).
    assert await db.fetchval(_IDS_DRAWN) >= drawn + bulk.REBUILD_MIN
    assert await db.fetchval("SELECT count(*) FROM sensor") == 0
    assert await db.fetchval("SELECT count(*) FROM deferred_index") == 0
    assert sensor_table.rebuilt(before, await sensor_table.indexes(db)) == set()


async def test_a_large_file_unreadable_far_in_or_in_its_header_stores_nothing(
    db, database_url, tmp_path: Path
):
    """A line that is not UTF-8 is found while the rows are being copied into the table (the
    COPY is aborted and rolled back with the rest); a header that names no serial, before the
    table is taken."""
    # Past the first megabyte the CLI decodes at once (sensor_import.BATCH).
    plain = b"".join(b"UN-%06d,%s\n" % (n, b"l" * 60) for n in range(bulk.REBUILD_MIN))
    assert len(plain) > BATCH
    before = await sensor_table.indexes(db)
    late = tmp_path / "late.csv"
    late.write_bytes(b"serial,label\n" + plain + b"UN-\xff,\n")
    header = tmp_path / "header.csv"
    header.write_bytes(b"name,label\n" + plain)
    drawn = await db.fetchval(_IDS_DRAWN)
    refused = await _import(database_url, str(late))
    assert refused.returncode == 1
    assert f"line {bulk.REBUILD_MIN + 2} is not UTF-8" in refused.stderr.decode()
    assert await db.fetchval(_IDS_DRAWN) > drawn  # it was being copied
    refused = await _import(database_url, str(header))
    assert refused.returncode == 1
    assert "must name serial" in refused.stderr.decode()
    assert await db.fetchval("SELECT count(*) FROM sensor") == 0
    assert sensor_table.rebuilt(before, await sensor_table.indexes(db)) == set()


async def test_a_broken_file_stores_nothing_and_says_which_rows(db, database_url, tmp_path: Path):
    path = tmp_path / "broken.csv"
    # Named by their lines in the file, as an editor shows them: past a blank line too.
    path.write_bytes(b"serial\nOK-1\n\nbad\x01serial\nOK-1\n")
    done = await _import(database_url, str(path))
    encoding = await _import(database_url, "-", stdin=b"serial\nOK-\xff\n")
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert lines == [
        "line 4: invalid_serial: serial 'bad\\x01serial' must be 1 to 128 printable ASCII "
        "characters",
        "line 5: duplicate_serial: serial 'OK-1' is already given in line 2",
        "droneshield: 2 of 3 rows are invalid; nothing was stored",
    ]
    assert encoding.returncode == 1
    assert "line 2 is not UTF-8" in encoding.stderr.decode()
    assert await db.fetchval("SELECT count(*) FROM sensor") == 0


async def test_rows_beyond_plain_ascii_get_every_check(db, database_url, tmp_path: Path):
    """Plain-ASCII rows pass with one match; the others (non-ASCII text, limits, newlines in a
    quoted field) get the per-field checks, in whatever order the header names the columns."""
    path = tmp_path / "mixed.csv"
    path.write_text(
        "label,site,serial\n"
        f"{'l' * 256},Zürich,OK-1\n"  # the longest label; a non-ASCII site
        ",,OK-2\n"
        f"{'l' * 257},,BAD-1\n"
        f",{'é' * 65},BAD-2\n"  # 130 bytes
        '"two\nlines",,BAD-3\n'
        f",,{'s' * 129}\n",
        encoding="utf-8",
    )
    refused = await _import(database_url, str(path))
    assert refused.returncode == 1
    assert [line.split(": ")[:2] for line in refused.stderr.decode().splitlines()[:-1]] == [
        ["line 4", "invalid_field"],
        ["line 5", "invalid_field"],
        ["line 6", "invalid_field"],  # a row of two lines
        ["line 8", "invalid_serial"],
    ]
    path.write_text(
        "".join(path.read_text(encoding="utf-8").splitlines(True)[:3]), encoding="utf-8"
    )
    done = await _import(database_url, str(path))
    assert done.returncode == 0, done.stderr
    stored = await db.fetch("SELECT serial, site, label FROM sensor ORDER BY serial")
    assert [tuple(r) for r in stored] == [("OK-1", "Zürich", "l" * 256), ("OK-2", None, None)]


async def test_a_bad_line_far_into_the_file_is_named_by_its_number(db, database_url):
    rows = b"".join(b"SERIAL-%07d\n" % n for n in range(200_000))  # several decoded batches
    done = await _import(database_url, "-", stdin=b"serial\n" + rows + b"OK-\xff\n")
    assert done.returncode == 1
    assert "line 200002 is not UTF-8 (byte 3 of the line)" in done.stderr.decode()
    assert await db.fetchval("SELECT count(*) FROM sensor") == 0


async def test_a_spreadsheet_export_imports_and_a_stray_quote_in_the_header_is_named(
    db, database_url
):
    """A byte order mark and blank lines (Excel's "CSV UTF-8") are read; a header the csv
    reader cannot parse is a one-line `invalid_csv` refusal, not a traceback."""
    spreadsheet = await _import(
        database_url, "-", stdin="\ufeffserial,site\r\nXL-1,north\r\n\r\nXL-2,\r\n\r\n".encode()
    )
    stray = await _import(database_url, "-", stdin=b'"serial"x\nOK-1\n')
    assert spreadsheet.returncode == 0, spreadsheet.stderr
    stored = await db.fetch("SELECT serial, site FROM sensor ORDER BY serial")
    assert [tuple(r) for r in stored] == [("XL-1", "north"), ("XL-2", None)]
    assert stray.returncode == 1
    [line] = stray.stderr.decode().strip().splitlines()
    assert line.startswith("droneshield: the CSV header (line 1) cannot be read")


async def test_two_large_imports_at_once_both_store_their_sensors(db, database_url):
    """Each holds the table's share lock from its checks and asks for the table to rebuild its
    indexes: a deadlock PostgreSQL breaks by failing one, which then inserts row by row, as
    when the lock is not granted in time (it once failed the whole import)."""
    rows = bulk.REBUILD_MIN
    done: dict[str, int] = {}

    async def import_(conn, prefix: str) -> None:  # type: ignore[no-untyped-def]
        async with conn.transaction():
            await conn.execute(
                'CREATE TEMP TABLE staged (serial text COLLATE "C") ON COMMIT DROP; '
                f"INSERT INTO staged SELECT '{prefix}-' || n FROM generate_series(1, {rows}) n"
            )
            await conn.fetchval("SELECT count(*) FROM sensor")  # the share lock, held
            holding.append(prefix)
            if len(holding) == 2:
                both_hold.set()
            await both_hold.wait()  # before either asks for the table
            done[prefix] = await bulk.insert(conn, "staged", "serial")

    holding: list[str] = []
    both_hold = trio.Event()
    with trio.fail_after(60):
        async with (
            connect(database_url) as first,
            connect(database_url) as second,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(import_, first, "A")
            nursery.start_soon(import_, second, "B")
    assert done == {"A": rows, "B": rows}
    assert await db.fetchval("SELECT count(*) FROM sensor") == 2 * rows
    await sensor_table.assert_counters_exact(db)


async def test_a_sensor_another_request_adds_meanwhile_with_another_site_is_a_conflict(
    db, database_url
):
    """The conflict check ran before the other request committed; the insert then waited for
    it and skipped the serial. Counting it as existing would answer 200 for a sensor stored
    with another site: the call is refused as a conflict, and stores nothing."""
    specs = [(0, SensorSpec("RACE-1", "north")), (1, SensorSpec("RACE-2", "north"))]

    async def chunks() -> AsyncIterator[Sequence[Numbered]]:
        yield specs

    refused: list[Exception] = []
    with trio.fail_after(20):
        async with connect(database_url) as other, trio.open_nursery() as nursery:
            async with other.transaction():
                await other.execute("INSERT INTO sensor (serial, site) VALUES ('RACE-1', 'south')")

                async def provision() -> None:
                    try:
                        await provisioning.provision(db, chunks(), Rows())
                    except SensorsConflict as exc:
                        refused.append(exc)

                nursery.start_soon(provision)
                await eventually(partial(another_waits_for_a_lock, other))
    [conflict] = refused
    assert [row["code"] for row in conflict.rows] == ["sensor_exists"]
    stored = await db.fetch("SELECT serial, site FROM sensor ORDER BY serial")
    assert [tuple(r) for r in stored] == [("RACE-1", "south")]


async def test_a_pipe_is_read_once_and_imports_whole(db, database_url, tmp_path: Path):
    """A FIFO (or `<(…)`) has no size to count ahead: counting its lines used to consume it, and
    the import then found the CSV empty."""
    fifo = tmp_path / "fleet.csv"
    os.mkfifo(fifo)
    content = b"serial,site\n" + b"".join(b"PI-%03d,north\n" % n for n in range(100))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, fifo.write_bytes, content)
        done = await _import(database_url, str(fifo))
    assert done.returncode == 0, done.stderr
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE site = 'north'") == 100


async def test_rows_that_hold_nothing_are_skipped_and_a_quoted_header_after_a_bom_is_read(
    db, database_url
):
    """Lines of spaces and rows of empty fields (a spreadsheet's trailing rows) hold no
    sensor; a byte order mark before a quoted header (every field quoted) is not part of it."""
    spaces = await _import(database_url, "-", stdin=b"serial\nSP-1\n   \nSP-2\n")
    quoted = await _import(
        database_url,
        "-",
        stdin='\ufeff"serial","site","label"\r\n"Q-1","north",""\r\n,,\r\n"","",""\r\n'.encode(),
    )
    assert spaces.returncode == 0, spaces.stderr
    assert quoted.returncode == 0, quoted.stderr
    stored = await db.fetch("SELECT serial, site FROM sensor ORDER BY serial")
    assert [tuple(r) for r in stored] == [("Q-1", "north"), ("SP-1", None), ("SP-2", None)]


async def test_a_file_with_lines_ended_by_cr_alone_is_refused_saying_so(db, database_url):
    done = await _import(database_url, "-", stdin=b"serial,site\rMAC-1,x\rMAC-2,y\r")
    assert done.returncode == 1
    assert "carriage return" in done.stderr.decode()
    assert await db.fetchval("SELECT count(*) FROM sensor") == 0


async def test_spaces_after_commas_are_not_part_of_the_fields(db, database_url):
    """As people type a CSV (`serial, site, label`): the header was read so, the values kept
    their spaces (site ' north'), and a quoted field after a space kept its quotes."""
    typed = b'serial, site, label\nSP-1, north, roof\nSP-2, "north, gate", "mast 2"\n'
    done = await _import(database_url, "-", stdin=typed)
    assert done.returncode == 0, done.stderr
    stored = await db.fetch("SELECT serial, site, label FROM sensor ORDER BY serial")
    assert [tuple(r) for r in stored] == [
        ("SP-1", "north", "roof"),
        ("SP-2", "north, gate", "mast 2"),
    ]
