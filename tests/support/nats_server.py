"""A private nats-server (JetStream on, its own port and store in a temporary directory) that a
test may kill and restart without disturbing anyone else's server on 127.0.0.1:4222."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Final

import trio

from .processes import Spawned, free_port, spawn

NATS_SERVER: Final = shutil.which("nats-server") or "/usr/sbin/nats-server"
READY_LINE: Final = "Server is ready"


def missing() -> str | None:
    """Why no private nats-server can run here, or None."""
    if not Path(NATS_SERVER).is_file():
        return f"no nats-server binary ({NATS_SERVER}); install Debian's nats-server"
    return None


class NatsServer:
    """One nats-server on a fixed port and store: `kill` (SIGKILL, as a crash) and `start`
    again keep both, so the stream survives as it would on a real host."""

    def __init__(self, store: Path, stack: AsyncExitStack) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = store
        self._stack = stack
        self._spawned: Spawned | None = None

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
        self._spawned = await self._stack.enter_async_context(spawn(argv))
        await self._spawned.wait_for(READY_LINE)

    async def kill(self) -> None:
        assert self._spawned is not None
        self._spawned.process.kill()
        await self._spawned.exited()


@asynccontextmanager
async def private_nats() -> AsyncIterator[NatsServer]:
    """A started private server, stopped on leaving (the caller bounds the time)."""
    with tempfile.TemporaryDirectory(prefix="droneshield-nats-") as store:
        async with AsyncExitStack() as stack:
            server = NatsServer(Path(store), stack)
            with trio.fail_after(10):
                await server.start()
            yield server
