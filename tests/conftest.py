"""Fixtures that return real things: a PostgreSQL server, a fresh migrated database per test, a
running daemon on ephemeral ports.

The server is DATABASE_URL's when set, else an embedded PostgreSQL started once per session in a
temporary directory. Each test gets its own database cloned from a migrated template.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trio_asyncio
from hypothesis import settings

from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import migrate, seed
from droneshield.db.pool import connect

from .support.browser import BrowserThread, ensure_chromium
from .support.pg_admin import admin, server, with_database

TEMPLATE = f"droneshield_tpl_{os.getpid()}"
pytest_plugins = ["tests.support.relay_peers"]  # `peers`: two daemons relaying to each other

# No time limit per example: hypothesis's default (200 ms) is a timed assertion, and on a busy
# two-core machine a pure-logic example of the timing wheel once took 313 ms (21 ms when
# replayed). Speed is the benchmarks' to judge, not the tests'.
settings.register_profile("droneshield", deadline=None)
settings.load_profile("droneshield")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server's maintenance URL, with a migrated template database on it."""
    with server("droneshield-pg-") as url:
        admin(url, f"DROP DATABASE IF EXISTS {TEMPLATE}", f"CREATE DATABASE {TEMPLATE}")

        async def migrate_template() -> None:
            async with trio_asyncio.open_loop(), connect(with_database(url, TEMPLATE)) as conn:
                await migrate.migrate(conn)

        trio.run(migrate_template)
        yield url
        admin(url, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@contextlib.contextmanager
def _scratch_database(server_url: str, create_options: str = "") -> Iterator[str]:
    name = f"droneshield_t_{uuid.uuid4().hex[:12]}"
    admin(server_url, f"CREATE DATABASE {name} {create_options}")
    try:
        yield with_database(server_url, name)
    finally:
        admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated, empty database for this test only."""
    with _scratch_database(server_url, f"TEMPLATE {TEMPLATE}") as url:
        yield url


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all, for migration tests."""
    with _scratch_database(server_url) as url:
        yield url


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    """The trio-asyncio loop that asyncio-only libraries (asyncpg, grpclib) run in."""
    async with trio_asyncio.open_loop():
        yield


@pytest.fixture
async def db(aio_loop: None, database_url: str) -> AsyncIterator[object]:
    """A connection to the test database, for arranging and checking state."""
    async with connect(database_url) as conn:
        yield conn


@pytest.fixture
async def sensors(db: object) -> list[str]:
    """Ten provisioned sensors, DS-00000001 … DS-00000010."""
    await seed.seed(db, 10)
    return [seed.serial_for(n) for n in range(1, 11)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        http_port=0,
        grpc_port=0,
        shutdown_grace=2.0,
        ack_timeout=5.0,
    )


@pytest.fixture
async def running(
    aio_loop: None, database_url: str, settings: Settings, nursery: trio.Nursery
) -> daemon.Running:
    """The whole daemon, started in the test's nursery on ephemeral ports."""
    return await nursery.start(daemon.run, settings, database_url)


@pytest.fixture
async def api(running: daemon.Running) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the running daemon (real sockets)."""
    url = f"http://127.0.0.1:{running.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture
async def api_with(
    aio_loop: None, database_url: str, nursery: trio.Nursery
) -> AsyncIterator[Callable[[Settings], Awaitable[httpx.AsyncClient]]]:
    """Start a daemon with other settings (on the test database) and get a client for it."""
    async with contextlib.AsyncExitStack() as clients:

        async def start(settings: Settings) -> httpx.AsyncClient:
            running = await nursery.start(daemon.run, settings, database_url)
            url = f"http://127.0.0.1:{running.http_port}"
            return await clients.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))

        yield start


@pytest.fixture(scope="session")
def browser() -> Iterator[BrowserThread]:
    """Debian's Chromium (installed with apt when missing), driven by Playwright in a thread of
    its own for the whole session (see tests/support/browser.py for why)."""
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    thread = BrowserThread()
    thread.start()
    yield thread
    thread.stop()
