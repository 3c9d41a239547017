"""Creating and dropping databases on a PostgreSQL server, for the test fixtures and the
benchmarks (plain asyncpg on a loop of its own: it runs before and after any trio run)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg


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
