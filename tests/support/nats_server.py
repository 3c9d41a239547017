"""A private nats-server (JetStream on, its own port and store in a temporary directory) that a
test may kill and restart without disturbing anyone else's server on 127.0.0.1:4222."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio

from .apt import ensure_package
from .processes import Spawned, free_port

NATS_SERVER: Final = Path("/usr/sbin/nats-server")
READY: Final = "Server is ready"  # what nats-server logs once it accepts clients


def missing() -> str | None:
    """Why no private nats-server can run here (Debian's, installed with apt when missing),
    or None."""
    return ensure_package("nats-server", NATS_SERVER)


class NatsServer:
    """One nats-server on a fixed port and store: `kill` (SIGKILL, as a crash) and `start`
    again keep both, so the stream survives as it would on a real host. The caller bounds the
    time of each call."""

    def __init__(self, store: Path, nursery: trio.Nursery, flags: Sequence[str] = ()) -> None:
        self.port = free_port()
        self._nursery = nursery  # where its output is read
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = store
        self._flags = list(flags)
        self._process: trio.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> None:
        argv = [
            NATS_SERVER,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self._store),
        ]
        argv += self._flags
        self._process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        output = Spawned(self._process)
        self._nursery.start_soon(output.collect)
        await output.wait_for(READY)  # raises when it exits first, with what it said

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            with trio.CancelScope(shield=True):
                await self._process.wait()


@asynccontextmanager
async def private_nats(*flags: str) -> AsyncIterator[NatsServer]:
    """A started private server (given nats-server's `flags` too: `--user`, `--pass`), killed
    on leaving."""
    with tempfile.TemporaryDirectory(prefix="droneshield-nats-") as store:
        async with trio.open_nursery() as nursery:
            server = NatsServer(Path(store), nursery, flags)
            try:
                with trio.fail_after(10):
                    await server.start()
                yield server
            finally:
                await server.kill()  # its output ends, and with it the task reading it
