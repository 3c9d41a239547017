"""The NOTIFY relay's LISTEN side keeps up with a burst: the daemon's loop hands over a read's
notifications many at a pass (`aio_loop`), and a consumer that took one per pass fell behind
until its buffer overflowed, telling the relay of a gap that never happened."""

from __future__ import annotations

import trio

from droneshield.aio_loop import open_loop
from droneshield.bus.notify import CHANNEL, LISTEN_BUFFER, NotifyBus
from droneshield.db.notify import notify_all
from droneshield.db.pool import acquire, open_pool

BURST = 3 * LISTEN_BUFFER


async def test_a_burst_of_notifications_arrives_whole_without_a_gap(database_url):
    delivered: list[str] = []
    gaps: list[None] = []
    sent = [str(n) for n in range(BURST)]
    done = trio.Event()

    def deliver(payload: str) -> None:
        delivered.append(payload)
        if len(delivered) == BURST:
            done.set()

    def gap() -> None:
        gaps.append(None)
        done.set()

    async with open_loop(), open_pool(database_url, size=1) as pool:
        async with trio.open_nursery() as nursery:
            bus = NotifyBus(pool, database_url)
            await nursery.start(bus.serve, deliver, gap)
            async with acquire(pool) as conn:
                await notify_all(conn, CHANNEL, sent)  # one statement: one burst at commit
            with trio.fail_after(10):
                await done.wait()
            nursery.cancel_scope.cancel()
    assert not gaps
    assert delivered == sent
