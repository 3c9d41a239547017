"""The relay over PostgreSQL NOTIFY/LISTEN on one channel: nothing to run besides the database.

Every daemon receives every message (NOTIFY has no subjects), up to PAYLOADS_PER_STATEMENT
payloads leave in one statement (more in one transaction), and what is sent while a daemon's
LISTEN connection is down is lost to it: when the connection is re-established (or its buffer
overflowed) the relay is told of a gap, and its clients reload from the database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

import trio

from ..db.notify import Listener, notify_all, open_listener
from ..db.pool import Pool, acquire, is_transient
from ..errors import RelayUnavailable
from . import Message

log = logging.getLogger(__name__)

CHANNEL: Final = "droneshield_sensor"
PAYLOAD_MAX: Final = 7_900  # bytes; PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more
PAYLOADS_PER_STATEMENT: Final = 100  # measured: ~57k notifications/s at this size
LISTEN_BUFFER: Final = 1_000  # payloads (≤ 8 kB each) received, not yet handled, before a gap
DELIVERED_PER_STEP: Final = 64  # payloads handled before the consumer lets other tasks run
CHECK_INTERVAL: Final = 5.0  # seconds of silence before the LISTEN connection is checked
RETRY_FIRST: Final = 0.1  # seconds
RETRY_MAX: Final = 5.0  # seconds


class NotifyBus:
    payload_max: Final = PAYLOAD_MAX
    shards: Final = 1

    def __init__(self, pool: Pool, database_url: str) -> None:
        self._pool = pool
        self._dsn = database_url

    async def publish(self, messages: Sequence[Message]) -> None:
        payloads = [message.payload for message in messages]
        step = PAYLOADS_PER_STATEMENT
        try:
            async with acquire(self._pool) as conn:
                # Several statements in one transaction: their notifications are delivered
                # together at its commit, or none are, so a retry after a failed statement
                # sends nothing twice (one whose COMMIT answer was lost still does).
                several = len(payloads) > step
                async with conn.transaction() if several else contextlib.nullcontext():
                    for i in range(0, len(payloads), step):
                        await notify_all(conn, CHANNEL, payloads[i : i + step])
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise RelayUnavailable(f"NOTIFY failed: {exc!r}") from exc

    async def serve(
        self,
        deliver: Callable[[str], None],
        gap: Callable[[], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        started = False
        delay = RETRY_FIRST
        while True:
            try:
                async with open_listener(self._dsn, CHANNEL, buffer=LISTEN_BUFFER) as listener:
                    if started:
                        gap()  # notifications sent while we were away are lost
                        log.info("LISTEN %s re-established", CHANNEL)
                    else:
                        started = True
                        task_status.started()
                    delay = RETRY_FIRST
                    await _consume(listener, deliver, gap)
            except Exception as exc:
                if not started or not is_transient(exc):
                    raise
                log.warning("LISTEN %s lost (%r); reconnecting in %.1f s", CHANNEL, exc, delay)
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
        payloads = [payload, *listener.received()]
        if listener.overflowed:
            listener.overflowed = False
            gap()
        for n, payload in enumerate(payloads, 1):
            deliver(payload)
            if n % DELIVERED_PER_STEP == 0:
                await trio.lowlevel.checkpoint()  # a full buffer is up to LISTEN_BUFFER
