"""NOTIFY and LISTEN: how daemons sharing one database tell each other about sensor changes.

The listener talks to asyncpg directly (through the trio-asyncio crossing, here and nowhere
else) rather than through triopg, because triopg's `close` is shielded without a bound and a
LISTEN connection must be closable within a deadline even when the server is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
import trio
import trio_asyncio

from .pool import CONNECT_TIMEOUT, Connection, close_bounded, connecting

CHECK_TIMEOUT: Final = 5.0  # seconds a liveness check of the LISTEN connection may take

_NOTIFY: Final = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"


async def notify_all(conn: Connection, channel: str, payloads: Sequence[str]) -> None:
    """Send every payload on `channel` in one statement (delivered when it commits)."""
    await conn.execute(_NOTIFY, channel, list(payloads))


class Listener:
    """Notifications received on one channel, buffered up to a bound.

    When the buffer is full further payloads are dropped and `overflowed` is set: the consumer
    must then assume it missed some and resynchronise.
    """

    def __init__(self, raw: asyncpg.Connection, buffer: int) -> None:
        self._raw = raw
        self._send, self._receive = trio.open_memory_channel[str](buffer)
        self.overflowed = False

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            self._send.send_nowait(payload)
        except trio.WouldBlock:
            self.overflowed = True
        except trio.ClosedResourceError:
            pass  # a late notification after the connection was lost

    def _on_terminate(self, conn: Any) -> None:
        self._send.close()

    async def receive(self) -> str:
        """The next payload.

        Raises:
            ConnectionResetError: the connection was lost (payloads before that come first).
        """
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise ConnectionResetError("the LISTEN connection was lost") from None

    def received(self) -> list[str]:
        """The payloads already buffered, taken without waiting: the loop hands over up to
        65 notifications a pass (`aio_loop`), and taking them one per pass the consumer
        would fall behind until the buffer overflowed."""
        payloads: list[str] = []
        while True:
            try:
                payloads.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return payloads

    async def check(self) -> None:
        """Raises (an asyncpg or OS error, or TimeoutError) if the connection is dead."""
        await trio_asyncio.aio_as_trio(self._raw.fetchval)("SELECT 1", timeout=CHECK_TIMEOUT)


@asynccontextmanager
async def open_listener(dsn: str, channel: str, *, buffer: int) -> AsyncIterator[Listener]:
    """A dedicated connection LISTENing on `channel`. Must run inside the trio-asyncio loop.

    Raises:
        DatabaseUnavailable: no connection could be had, whatever the server's reason.

    Cancellation: the connection is closed, shielded and within CLOSE_TIMEOUT, else aborted.
    """
    with connecting():
        raw = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn, timeout=CONNECT_TIMEOUT)
    try:
        listener = Listener(raw, buffer)
        raw.add_termination_listener(listener._on_terminate)
        await trio_asyncio.aio_as_trio(raw.add_listener)(channel, listener._on_notify)
        yield listener
    finally:
        await close_bounded(raw)
