"""What the benchmarks share: a throwaway migrated database and percentile tables."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio
import trio_asyncio
from rich.console import Console
from rich.table import Table

from droneshield.db import embedded, migrate
from droneshield.db.pool import connect

console = Console()


def _admin(url: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh migrated database on DATABASE_URL's server, else on an embedded one."""
    with tempfile.TemporaryDirectory(prefix="droneshield-bench-") as tmp:
        server = os.environ.get("DATABASE_URL")
        if not server:
            Path(tmp).chmod(0o755)
            server = embedded.start(Path(tmp) / "pg")
        name = f"droneshield_bench_{uuid.uuid4().hex[:8]}"
        _admin(server, f"CREATE DATABASE {name}")
        url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))

        async def run_migrations() -> None:
            async with trio_asyncio.open_loop(), connect(url) as conn:
                await migrate.migrate(conn)

        trio.run(run_migrations)
        try:
            yield url
        finally:
            _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 of `samples` (seconds) in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def print_table(
    title: str, workload: str, columns: Sequence[str], rows: Sequence[Sequence]
) -> None:
    table = Table(title=title, caption=workload)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
