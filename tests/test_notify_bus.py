"""The NOTIFY relay's LISTEN side keeps up with a burst: the daemon's loop hands over a read's
notifications many at a pass (`aio_loop`), and a consumer that took one per pass fell behind
until its buffer overflowed, telling the relay of a gap that never happened. And what it had
buffered when its connection was lost is still handed over, before the loss is told. And a
publish that fails part-way has delivered nothing, so its retry sends nothing twice."""

from __future__ import annotations

import asyncpg
import pytest
import trio

from droneshield.aio_loop import open_loop
from droneshield.bus import Message
from droneshield.bus.notify import (
    CHANNEL,
    LISTEN_BUFFER,
    PAYLOAD_MAX,
    PAYLOADS_PER_STATEMENT,
    NotifyBus,
)
from droneshield.db.notify import notify_all, open_listener
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


async def test_payloads_buffered_when_the_connection_is_lost_are_taken_before_the_loss(
    database_url,
):
    sent = [str(n) for n in range(100)]
    lost = trio.Event()
    async with open_loop(), open_pool(database_url, size=1) as pool:
        async with open_listener(database_url, CHANNEL, buffer=LISTEN_BUFFER) as listener:
            # After the listener's own (registered first): its buffer is closed by then.
            listener._raw.add_termination_listener(lambda _: lost.set())
            with trio.fail_after(10):
                async with acquire(pool) as conn:
                    await notify_all(conn, CHANNEL, sent)
                    # Its server sends every pending notification at once, so once the first
                    # is here the rest precede the end of the connection (a termination
                    # before they were sent would have lost them on the server).
                    first = await listener.receive()
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                    )
                await lost.wait()
            assert [first, *listener.received()] == sent
            with pytest.raises(ConnectionResetError):
                await listener.receive()


async def test_a_publish_that_fails_part_way_delivers_none_of_its_messages(database_url):
    """Its statements run in one transaction: the first statements' notifications are not
    delivered when a later one fails (they were, before, and a retry sent them again)."""
    count = 2 * PAYLOADS_PER_STATEMENT
    messages = [Message(0, str(n), str(n)) for n in range(count)]
    messages.append(Message(0, "x" * (PAYLOAD_MAX + 200), "too long"))  # PostgreSQL refuses it
    send, delivered = trio.open_memory_channel[str](count + 1)
    async with open_loop(), open_pool(database_url, size=1) as pool:
        async with trio.open_nursery() as nursery:
            bus = NotifyBus(pool, database_url)
            await nursery.start(bus.serve, send.send_nowait, lambda: None)
            with trio.fail_after(10):
                with pytest.raises(asyncpg.InvalidParameterValueError):
                    await bus.publish(messages)
                await bus.publish([Message(0, "after", "after")])
                first = await delivered.receive()
            nursery.cancel_scope.cancel()
    assert first == "after"
