"""Group commit: acks mean committed, reports coalesce, batches are few."""

from __future__ import annotations

import asyncio

import trio
from grpclib.client import Channel
from grpclib.const import Cardinality

from droneshield.db import seed
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch

from .support import plain_asyncio
from .support.grpc_clients import SEND_STATUS, aio, grpclib_stub, raw_channel, send, send_batch
from .support.releases import add_software


async def test_acknowledged_report_is_visible_from_another_connection(running, db, sensors):
    # `db` is a separate connection from the daemon's pool; no transaction of ours is open.
    with trio.fail_after(10):
        await send(running.grpc_port, sensors[3], "")
    assert await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[3])


async def test_concurrent_reports_for_one_sensor_end_in_the_last_state(running, db, sensors):
    versions = [f"1.0.{i}" for i in range(200)]
    await add_software(db, *versions)

    async def burst() -> list[object]:
        # One channel, up to 50 calls in flight, each request written before the next call
        # sends its own: the daemon reads them in the order they were sent, so the last sent
        # is the last state. (Calls that each sent when their task next ran went out in the
        # order the client's loop ran them: against a daemon that answers sooner, early calls
        # were overtaken by later ones, and the last state was one of the first 50.)
        in_flight = asyncio.Semaphore(50)
        sent = [asyncio.Event() for _ in versions]

        async def call(channel: Channel, n: int) -> bytes:
            message = bytes(DeviceStatus(serial=sensors[0], software_version=versions[n]))
            async with (
                in_flight,
                channel.request(SEND_STATUS, Cardinality.UNARY_UNARY, bytes, bytes) as stream,
            ):
                if n:
                    await sent[n - 1].wait()
                try:
                    await stream.send_message(message, end=True)
                finally:
                    sent[n].set()  # a call that failed to send holds none of the others
                answer: bytes = await stream.recv_message()
                return answer

        async with raw_channel(running.grpc_port) as channel:
            return await asyncio.gather(*(call(channel, n) for n in range(len(versions))))

    with trio.fail_after(20):
        acks = await aio(burst)
    assert len(acks) == 200
    assert await db.fetchval("SELECT version FROM sensor WHERE serial = $1", sensors[0]) == (
        "1.0.199"
    )
    # Every intermediate version that was committed was recorded once, in order.
    recorded = [
        r["new"]
        for r in await db.fetch("SELECT new FROM sensor_event WHERE kind = 'version' ORDER BY id")
    ]
    assert recorded == sorted(recorded, key=lambda v: int(v.rsplit(".", 1)[1]))
    assert recorded[-1] == "1.0.199"
    assert running.writer.statements < 200


async def test_last_report_in_a_batch_wins(running, db, sensors):
    versions = [f"1.0.{i}" for i in range(200)]
    await add_software(db, *versions)
    with trio.fail_after(20):
        ack = await send_batch(running.grpc_port, [(sensors[0], v) for v in versions])
    assert ack.accepted == 200
    # The 199 earlier reports were committed together with the last one: theirs are superseded.
    assert {r.code for r in ack.rejected} == {"VERSION_NOT_STORED"}
    assert len(ack.rejected) == 199
    assert await db.fetchval("SELECT version FROM sensor WHERE serial = $1", sensors[0]) == (
        "1.0.199"
    )


async def test_five_thousand_reports_take_a_handful_of_statements(running, db):
    await seed.seed(db, 5000)
    serials = [seed.serial_for(n) for n in range(1, 5001)]

    async def five_batches() -> list[int]:
        async with grpclib_stub(running.grpc_port) as stub:
            calls = [
                stub.send_status_batch(
                    DeviceStatusBatch(
                        statuses=[DeviceStatus(serial=s) for s in serials[i : i + 1000]]
                    )
                )
                for i in range(0, 5000, 1000)
            ]
            return [ack.accepted for ack in await asyncio.gather(*calls)]

    before = running.writer.statements
    with trio.fail_after(30):
        accepted = await aio(five_batches)
    assert accepted == [1000] * 5
    assert running.writer.statements - before <= 5
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == 5000


async def test_concurrent_unary_reports_share_commits(running, db):
    await seed.seed(db, 500)
    serials = [seed.serial_for(n) for n in range(1, 501)]

    async def burst() -> None:
        async with grpclib_stub(running.grpc_port) as stub:
            calls = (stub.send_status(DeviceStatus(serial=s), timeout=20) for s in serials)
            await asyncio.gather(*calls)

    before = running.writer.statements
    # On asyncio's own loop in a thread of its own, as a client process sends them: a client
    # on the test's trio-asyncio loop shares trio's scheduler with the daemon, and it sent a
    # call per pass of it, which was the test's pace, not the daemon's.
    await trio.to_thread.run_sync(plain_asyncio.run, burst())
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == 500
    assert running.writer.statements - before < 100
