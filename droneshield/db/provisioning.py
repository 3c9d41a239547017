"""Provisioning, changing and retiring sensors: the `sensor` table's writes by operators.

Sensors to provision are copied (COPY, the fast path of `seed`) into a temporary table and
applied in one transaction: rows that repeat a serial or contradict a stored sensor refuse the
whole call, and whatever it stores becomes visible at once. A retired sensor provisioned again
is restored with its history; an existing identical one is counted as existing. A large file
imported into an empty fleet skips the staging: `fill` copies its rows into the table itself.
"""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from ..domain import SensorState
from ..errors import SensorsConflict
from ..provisioning import ERRORS_SHOWN, Numbered, Rows, SensorSpec
from . import bulk
from .pool import Connection
from .sensors import EDITED, edited, edited_columns


def _duplicates(numbered: str) -> str:
    """The rows (`idx`) of `numbered` (`idx, serial`) whose serial an earlier row gave (`first`),
    the first ERRORS_SHOWN + 1, with how many there are."""
    return f"""
WITH i AS ({numbered})
SELECT i.idx, i.serial, d.first, count(*) OVER () AS repeated
FROM (SELECT serial, min(idx) AS first FROM i GROUP BY serial HAVING count(*) > 1) d
JOIN i ON i.serial = d.serial AND i.idx <> d.first
ORDER BY i.idx LIMIT {ERRORS_SHOWN + 1}
"""


_STAGED: Final = _duplicates("SELECT idx, serial FROM incoming")
# Rows `fill` copied, numbered in the order they were copied (ids are drawn as they arrive).
_COPIED: Final = _duplicates(
    "SELECT row_number() OVER (ORDER BY id) - 1 AS idx, serial FROM sensor"
)

_CONFLICTS: Final = f"""
SELECT i.idx, i.serial, s.site, s.label
FROM incoming i JOIN sensor s ON s.serial = i.serial
WHERE s.retired_at IS NULL AND (s.site IS DISTINCT FROM i.site OR s.label IS DISTINCT FROM i.label)
ORDER BY i.idx LIMIT {ERRORS_SHOWN + 1}
"""

_RESTORE: Final = f"""
WITH restored AS (
    UPDATE sensor s SET retired_at = NULL, site = i.site, label = i.label
    FROM incoming i
    WHERE s.serial = i.serial AND s.retired_at IS NOT NULL
    RETURNING {edited_columns("s")}
), events AS (
    INSERT INTO sensor_event (sensor_id, kind, old, new)
    SELECT id, 'restored', 'retired', NULL FROM restored ORDER BY id
)
SELECT * FROM restored
"""

_COLUMNS: Final = ", ".join(SensorSpec._fields)  # what a row asks for: serial, site, label
_INSERT: Final = bulk.statement("incoming", _COLUMNS)


@dataclass(frozen=True, slots=True)
class Provisioned:
    created: int  # new sensors, and retired ones restored
    existing: int  # already provisioned exactly so
    # Those created and restored, as live views get them (only when asked: an import of
    # millions has no live view to tell).
    changes: list[SensorState]


async def provision(
    conn: Connection,
    specs: AsyncIterable[Sequence[Numbered]],
    rows: Rows,
    *,
    changes: bool = False,
) -> Provisioned:
    """Store the sensors of `specs` (chunks, in row order) all or none; with `changes`, return
    those created or restored.

    `rows` collected the errors of reading them; they are checked once every chunk is read,
    with the duplicates and conflicts found here, so one refusal lists them all.

    Raises:
        InvalidSensors: a row was broken or repeats a serial; nothing is stored.
        SensorsConflict: a row names a sensor stored with another site or label.
    """
    async with conn.transaction():
        await bulk.begin(conn)
        await conn.execute(
            'CREATE TEMP TABLE incoming (idx int, serial text COLLATE "C", site text, '
            "label text) ON COMMIT DROP"
        )
        valid = 0
        async for chunk in specs:
            await conn.copy_records_to_table(
                "incoming", records=[(i, s.serial, s.site, s.label) for i, s in chunk]
            )
            valid += len(chunk)
        await _note_duplicates(conn, _STAGED, rows, int)
        rows.check()
        restored = [edited(r) for r in await conn.fetch(_RESTORE)]
        if changes:
            found = [edited(r) for r in await conn.fetch(f"{_INSERT} RETURNING {EDITED}")]
            inserted = len(found)
        else:
            found, inserted = [], await bulk.insert(conn, "incoming", _COLUMNS)
        created = len(restored) + inserted
        if created < valid:
            # Checked after the insert, not before: a sensor counted as existing may have been
            # added by another request meanwhile (the insert waited for it to commit, then
            # skipped it). Each must be exactly as asked, or the whole call is refused as a
            # conflict and rolled back.
            await _refuse_conflicts(conn, rows)
    return Provisioned(created, valid - created, restored + found if changes else [])


async def fill(conn: Connection, specs: Iterable[Numbered], rows: Rows) -> Provisioned | None:
    """Store the sensors of `specs` (in row order) all or none if the fleet is empty, copying
    them into the table as they are read (bulk.fill): a large file's import. None, with
    `specs` not read, when the fleet holds any sensor or another session holds the table
    (`provision` then).

    Raises:
        InvalidSensors: a row was broken or repeats a serial; nothing is stored.
    """
    copied = array("q")  # the index of each row copied, in the order copied

    def records() -> Iterator[SensorSpec]:
        for index, spec in specs:
            copied.append(index)
            yield spec

    async with conn.transaction():
        await bulk.begin(conn)
        filling = await bulk.fill(conn, SensorSpec._fields, records())
        if filling is None:
            return None
        if len(copied) != filling.copied:
            raise RuntimeError(f"copied {filling.copied:,} rows of {len(copied):,}")
        # A broken row refuses the file before any index is built; a repeated serial, when
        # the serial's constraint cannot be. Either way every repeat is listed too.
        if rows.errors or not await bulk.built(conn, filling):
            await _note_duplicates(conn, _COPIED, rows, copied.__getitem__)
            rows.check()
            # Never commit a table left without its indexes.
            raise RuntimeError("the serial's unique index failed, yet no serial repeats")
    return Provisioned(filling.copied, 0, [])


async def _note_duplicates(
    conn: Connection, query: str, rows: Rows, index: Callable[[int], int]
) -> None:
    """Note in `rows` the rows that repeat a serial, found by `query` (`_duplicates`), whose
    `idx` is the row `index(idx)`."""
    duplicates = await conn.fetch(query)
    for r in duplicates:
        rows.add(
            index(r["idx"]),
            "duplicate_serial",
            f"serial {r['serial']!r} is already given in {rows.where(index(r['first']))}",
        )
    if duplicates:
        rows.unlisted += duplicates[0]["repeated"] - len(duplicates)


async def _refuse_conflicts(conn: Connection, rows: Rows) -> None:
    """Raises:
    SensorsConflict: staged rows name sensors stored with another site or label."""
    conflicts = await conn.fetch(_CONFLICTS)
    if conflicts:
        raise SensorsConflict(
            f"{len(conflicts) if len(conflicts) <= ERRORS_SHOWN else 'more than 100'} "
            "sensors exist with another site or label; change them with "
            "PATCH /sensors/{serial}; nothing was stored",
            [
                rows.error(
                    r["idx"],
                    "sensor_exists",
                    f"{r['serial']!r} exists with site {r['site']!r} and label {r['label']!r}",
                ).as_json()
                for r in conflicts[:ERRORS_SHOWN]
            ],
        )


async def update(
    conn: Connection, serial: str, changes: dict[str, str | None]
) -> SensorState | None:
    """Set `site` and/or `label` (None clears) of a sensor: the sensor changed, None if there
    is no such sensor."""
    assert changes
    assert set(changes) <= {"site", "label"}
    columns = sorted(changes)
    assignments = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
    row = await conn.fetchrow(
        f"UPDATE sensor SET {assignments} WHERE serial = $1 RETURNING {EDITED}",
        serial,
        *(changes[c] for c in columns),
    )
    return None if row is None else edited(row)


# An online sensor retired goes offline then: the history says so (an `offline` event before
# `retired`, and the status change's time), or its availability would count it online until
# it next reported. No alert: retiring is the operator's doing, not the sensor going dark.
_RETIRE: Final = f"""
WITH before AS (
    SELECT id, online FROM sensor WHERE serial = $1 AND retired_at IS NULL FOR UPDATE
), retired AS (
    UPDATE sensor s SET retired_at = now(), online = false,
        status_changed_at = CASE WHEN b.online THEN now() ELSE s.status_changed_at END
    FROM before b WHERE s.id = b.id
    RETURNING {edited_columns("s")}, b.online AS was_online
), events AS (
    INSERT INTO sensor_event (sensor_id, kind, old, new)
    SELECT id, 'offline', 'online', 'offline' FROM retired WHERE was_online
    UNION ALL
    SELECT id, 'retired', NULL, 'retired' FROM retired
)
SELECT * FROM retired
"""


async def retire(conn: Connection, serial: str) -> SensorState | None:
    """Retire a sensor: it leaves listings and totals, its reports are refused, its history
    stays. The sensor, retired (now or before); None if there is no such sensor."""
    row = await conn.fetchrow(_RETIRE, serial)
    if row is None:
        row = await conn.fetchrow(f"SELECT {EDITED} FROM sensor WHERE serial = $1", serial)
    return None if row is None else edited(row)
