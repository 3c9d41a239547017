"""A PostgreSQL server for the test fixtures and the benchmarks, and creating and dropping
databases on it (plain asyncpg on a loop of its own: it runs before and after any trio run)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from droneshield.db import embedded


@contextmanager
def server(prefix: str) -> Iterator[str]:
    """DATABASE_URL's server, else an embedded one in a temporary directory, stopped and
    removed on the way out."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        Path(tmp).chmod(0o755)  # the embedded server may run as its own system user
        with embedded.running(Path(tmp) / "pg") as url:
            yield url


def admin(url: str, *statements: str) -> None:
    """Run `statements` one by one on a connection of their own (CREATE/DROP DATABASE cannot
    run inside a transaction)."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
