"""The embedded PostgreSQL (no DATABASE_URL): the last process using it stops it, even after
another was SIGKILLed, and its socket is reachable by its own user only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from droneshield.db import embedded

from .support.processes import ROOT, running

START_TIMEOUT = 60  # seconds for a process to start (or attach to) the server and exit
# Starts the server, then dies as `kill -9` would make it: no clean-up of any kind.
KILLED_USER = """
import os, signal, sys
from pathlib import Path
from droneshield.db import embedded
embedded.start(Path(sys.argv[1]))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory that the embedded server's own system user can enter."""
    with tempfile.TemporaryDirectory(prefix="droneshield-embedded-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


def _postmaster(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


def test_the_last_user_stops_the_server_though_an_earlier_one_was_killed(shared_tmp):
    pgdata = shared_tmp / "pg"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_USER, str(pgdata)], cwd=ROOT, timeout=START_TIMEOUT
    )
    assert killed.returncode == -signal.SIGKILL
    postgres = _postmaster(pgdata)
    assert postgres is not None
    assert running(postgres)  # nobody stopped it
    try:
        env = {**os.environ, "DRONESHIELD_DATA_DIR": str(shared_tmp)}
        env.pop("DATABASE_URL", None)
        migrate = [sys.executable, "-m", "droneshield", "migrate"]
        subprocess.run(migrate, cwd=ROOT, env=env, timeout=START_TIMEOUT, check=True)
        assert not running(postgres)
        assert _postmaster(pgdata) is None
    finally:
        if running(postgres):
            os.kill(postgres, signal.SIGINT)  # fast shutdown, for the tests after this one


def test_a_socket_outside_a_long_data_directory_is_private(shared_tmp):
    pgdata = shared_tmp / ("long-" * 20) / "pg"  # too long a path for a Unix socket in it
    with embedded.running(pgdata) as url:
        socket_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
        assert not socket_dir.is_relative_to(pgdata)
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        assert socket_dir.stat().st_uid == pgdata.stat().st_uid  # the server's user
        assert socket_dir.parent != Path(tempfile.gettempdir())
