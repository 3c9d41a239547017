"""Provisioning sensors in bulk with COPY. Serials are `DS-` and eight digits (`DS-00000042`), so
seeding N always means the same N sensors and running it twice changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Final

from . import bulk
from .pool import Connection

if TYPE_CHECKING:
    from ..progress import Steps  # rich draws bars for the CLI; the work only counts

SERIAL_PREFIX: Final = "DS-"
CHUNK: Final = 100_000  # rows per COPY, to keep client memory flat at millions


def serial_for(number: int) -> str:
    return f"{SERIAL_PREFIX}{number:08d}"


async def seed(conn: Connection, count: int, steps: Steps | None = None) -> int:
    """Ensure sensors DS-00000001 … DS-<count> exist. Returns how many were created.

    One transaction: an empty fleet gets them copied straight into the table when they are
    many (bulk.fill); else the serials are copied into a temporary table in chunks, then what
    is missing is inserted in one statement, so a small fleet gets its indexes built once
    instead of maintained row by row (bulk.py). Nothing is half-seeded if it is interrupted.
    `steps` advances as serials are copied.
    """
    serials = _serials(count, steps)
    async with conn.transaction():
        await bulk.begin(conn)
        filling = await bulk.fill(conn, ("serial",), serials) if count >= bulk.REBUILD_MIN else None
        if filling is not None:
            if not await bulk.built(conn, filling):  # never commit a table without its indexes
                raise RuntimeError("seeded serials repeat")
            return filling.copied
        await conn.execute('CREATE TEMP TABLE seed_serial (serial text COLLATE "C") ON COMMIT DROP')
        while chunk := list(islice(serials, CHUNK)):
            await conn.copy_records_to_table("seed_serial", records=chunk)
        return await bulk.insert(conn, "seed_serial", "serial")


def _serials(count: int, steps: Steps | None) -> Iterator[tuple[str]]:
    """Records of serials 1 … `count`, `steps` advanced every CHUNK and set to the storing
    phase after the last."""
    for start in range(1, count + 1, CHUNK):
        stop = min(start + CHUNK, count + 1)
        yield from ((serial_for(n),) for n in range(start, stop))
        if steps:
            steps.advance(stop - start)
    if steps:
        steps.phase(bulk.STORING)
