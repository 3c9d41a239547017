"""The run file of `droneshield dev`: where its database and servers are, for the tools that
talk to them (`just emit`, `just demo-uploads`) to find without being told.

`dev` writes `<data_dir>/dev.json` once the daemon is ready and removes it when it stops. It
holds the database URL (with the embedded server's socket, or DATABASE_URL as given, password
included), so it is written readable by its owner only. A file left by a `dev` that was killed
is recognised by its process id and ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

NAME: Final = "dev.json"


@dataclass(frozen=True)
class DevRun:
    pid: int
    database_url: str
    http_url: str  # the dashboard and API base, e.g. http://127.0.0.1:8000
    grpc_target: str  # HOST:PORT of the gRPC ingest


@contextmanager
def published(data_dir: Path, run: DevRun) -> Iterator[Path]:
    """Write the run file for the block's duration (owner-only), then remove it."""
    path = data_dir / NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(run), out)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def find(data_dir: Path) -> DevRun | None:
    """The running `dev`'s addresses, or None (no file, unreadable, or its process is gone)."""
    try:
        run = DevRun(**json.loads((data_dir / NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return run if _alive(run.pid) else None
