"""`droneshield sensors import FILE.csv|-`: provision many sensors from a CSV file (or stdin).

The same rules as `POST /sensors` (provisioning.py), without its 10,000-row limit: the rows
stream through the CSV reader in chunks, each chunk is copied into the database with COPY (a
large file into an empty fleet: into the sensor table itself, db/provisioning.fill), and
the whole file is applied in one transaction, so a file with one broken row stores nothing and
lists what is wrong (the first 100 rows). A bar shows progress on a terminal; otherwise one
summary line is printed (progress.py).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

from .db import bulk
from .errors import Invalid, InvalidSensors
from .provisioning import CsvHeaderError, Numbered, Rows, from_csv

if TYPE_CHECKING:  # rich is imported only when the command runs (the CLI starts fast)
    from .progress import Steps

CHUNK: Final = 50_000  # rows per COPY
# The search index of a large import is built after it by a daemon (search_index.py).
SEARCH_INDEX_NOTE: Final = (
    "search index left to a daemon to build: searches scan every sensor until then"
)
BATCH: Final = 1 << 20  # bytes of lines decoded at once


def _lines(stream: BinaryIO) -> Iterator[str]:
    """The file's lines as text, decoded a megabyte of lines at a time (one call for all).

    Raises:
        Invalid: a line that is not UTF-8 (named by its number).
    """
    before = 0  # lines of the batches already decoded
    while batch := stream.readlines(BATCH):
        try:
            lines = list(map(bytes.decode, batch))
        except UnicodeDecodeError:
            for number, raw in enumerate(batch, start=before + 1):
                try:
                    raw.decode()
                except UnicodeDecodeError as exc:
                    raise Invalid(
                        f"line {number} is not UTF-8 (byte {exc.start} of the line); "
                        "nothing was stored",
                        code="invalid_encoding",
                    ) from None
            raise
        yield from lines
        before += len(batch)


def _counted(specs: Iterator[Numbered], steps: Steps) -> Iterator[Numbered]:
    """`specs`, the bar advanced every CHUNK rows, then set to the storing phase."""
    read = 0
    for numbered in specs:
        yield numbered
        read += 1
        if read == CHUNK:
            steps.advance(read)
            read = 0
    steps.advance(read)
    steps.phase(bulk.STORING)


async def _chunks(specs: Iterator[Numbered]) -> AsyncIterator[Sequence[Numbered]]:
    while chunk := list(islice(specs, CHUNK)):
        yield chunk


def _data_rows(path: Path) -> int:
    """Lines of a file after its header: the bar's total (quoted newlines make it an estimate)."""
    lines = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
    return max(lines - 1, 0)


def run(url: str, file: str) -> None:
    """Import `file` (`-`: stdin).

    Raises:
        Invalid: unreadable CSV (encoding, header). InvalidSensors, SensorsConflict: broken
            rows (printed to stderr, the first 100). OSError: the file cannot be read.
    """
    import trio

    from . import progress
    from .db import migrate
    from .db import provisioning as db
    from .db.pool import Connection, on_connection

    source = sys.stdin.buffer if file == "-" else Path(file).open("rb")
    # Counted only in a regular file: reading a pipe (`<(…)`, a FIFO) to count its lines would
    # consume what the import is to read.
    total = _data_rows(Path(file)) if file != "-" and Path(file).is_file() else None

    async def work(conn: Connection, steps: Steps) -> tuple[db.Provisioned, bool]:
        await migrate.require_migrated(conn)
        rows = Rows()
        try:
            read = from_csv(_lines(source), rows)
            # The header and the rows up to the first valid one, read before any table is
            # taken: a file refused from its start never takes it.
            first = next(read, None)
            specs = _counted(chain([] if first is None else [first], read), steps)
            # A file is read at disk speed: the table it fills may be taken while it is read.
            large = total is not None and total >= bulk.REBUILD_MIN
            fill = large and first is not None and not rows.errors
            done = await db.fill(conn, specs, rows) if fill else None
            if done is None:
                done = await db.provision(conn, _chunks(specs), rows)
        except CsvHeaderError as exc:
            raise Invalid(str(exc), code="invalid_csv") from None
        return done, await bulk.deferred(conn)

    try:
        with progress.track("importing", done="imported", unit="sensor", total=total) as steps:
            done, deferred = trio.run(on_connection, url, lambda conn: work(conn, steps))
            steps.note = f"{done.created:,} new, {done.existing:,} existing"
            if deferred:
                steps.note += f"; {SEARCH_INDEX_NOTE}"
    except Exception as exc:
        root: BaseException = exc
        while isinstance(root, BaseExceptionGroup):  # trio-asyncio's loop wraps what it raises
            root = root.exceptions[0]
        if isinstance(root, InvalidSensors):
            for row in root.rows:  # by line, as an editor shows the file
                where = f"line {row['line']}" if "line" in row else f"row {row['index']}"
                print(f"{where}: {row['code']}: {row['message']}", file=sys.stderr)
        raise
    finally:
        if source is not sys.stdin.buffer:
            source.close()
