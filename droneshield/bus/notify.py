"""The relay over PostgreSQL NOTIFY/LISTEN on one channel: nothing to run besides the database.

Every daemon receives every message (NOTIFY has no subjects), up to PAYLOADS_PER_STATEMENT
payloads leave in one statement, and what is sent while a daemon's LISTEN connection is down is
lost to it: when the connection is re-established (or its buffer overflowed) the relay is told
of a gap, and its clients reload from the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, NoReturn

import trio

from ..db.notify import listen, notify_all
from ..db.pool import Pool, acquire, is_transient
from ..errors import RelayUnavailable
from . import Message

CHANNEL: Final = "droneshield_sensor"
PAYLOAD_MAX: Final = 7_900  # bytes; PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more
PAYLOADS_PER_STATEMENT: Final = 100  # measured: ~57k notifications/s at this size
LISTEN_BUFFER: Final = 1_000  # payloads (≤ 8 kB each) received, not yet handled, before a gap


class NotifyBus:
    payload_max: Final = PAYLOAD_MAX
    shards: Final = 1

    def __init__(self, pool: Pool, database_url: str) -> None:
        self._pool = pool
        self._dsn = database_url

    async def publish(self, messages: Sequence[Message]) -> None:
        payloads = [payload for _, payload in messages]
        step = PAYLOADS_PER_STATEMENT
        try:
            async with acquire(self._pool) as conn:
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
        await listen(
            self._dsn, CHANNEL, deliver, gap, buffer=LISTEN_BUFFER, task_status=task_status
        )
