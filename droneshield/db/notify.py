"""NOTIFY and LISTEN: how daemons sharing one database tell each other about sensor changes.

The listener talks to asyncpg directly (through the trio-asyncio crossing, here and nowhere
else) rather than through triopg, because triopg's `close` is shielded without a bound and a
LISTEN connection must be closable within a deadline even when the server is gone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn

import asyncpg
import trio
import trio_asyncio

from .pool import CLOSE_TIMEOUT, CONNECT_TIMEOUT, Connection, connecting, is_transient

log = logging.getLogger(__name__)

CHECK_TIMEOUT: Final = 5.0  # seconds a liveness check of the LISTEN connection may take
CHECK_INTERVAL: Final = 5.0  # seconds of silence before the LISTEN connection is checked
RETRY_FIRST: Final = 0.1  # seconds
RETRY_MAX: Final = 5.0  # seconds

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
        with trio.CancelScope(shield=True):
            try:
                await trio_asyncio.aio_as_trio(raw.close)(timeout=CLOSE_TIMEOUT)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                raw.terminate()


async def listen(
    dsn: str,
    channel: str,
    deliver: Callable[[str], None],
    gap: Callable[[], None],
    *,
    buffer: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """LISTEN on `channel` until cancelled: `deliver` each payload, and call `gap` whenever
    some may have been missed (the connection was lost and is back, or the buffer overflowed).

    Started once the first LISTEN holds; an error before that propagates. Afterwards transient
    errors reconnect, with backoff; other errors propagate.
    """
    started = False
    delay = RETRY_FIRST
    while True:
        try:
            async with open_listener(dsn, channel, buffer=buffer) as listener:
                if started:
                    gap()  # notifications sent while we were away are lost
                    log.info("LISTEN %s re-established", channel)
                else:
                    started = True
                    task_status.started()
                delay = RETRY_FIRST
                await _consume(listener, deliver, gap)
        except Exception as exc:
            if not started or not is_transient(exc):
                raise
            log.warning("LISTEN %s lost (%r); reconnecting in %.1f s", channel, exc, delay)
        await trio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


async def _consume(
    listener: Listener, deliver: Callable[[str], None], gap: Callable[[], None]
) -> NoReturn:
    while True:
        with trio.move_on_after(CHECK_INTERVAL) as quiet:
            payload = await listener.receive()
        if quiet.cancelled_caught:
            await listener.check()
            continue
        if listener.overflowed:
            listener.overflowed = False
            gap()
        deliver(payload)
