"""A gRPC call's deadline bounds its reports' wait in the daemon: once the caller has given up,
its reports are answered, not committed, so an overloaded writer spends its commits on callers
still waiting (real daemon, real gRPC channel, real PostgreSQL)."""

from __future__ import annotations

import trio
from grpclib.client import Channel, UnaryUnaryMethod

from droneshield import daemon
from droneshield.db.pool import connect
from droneshield.ingest.wire import DeviceStatus, StatusAck

from .support.grpc_clients import SEND_STATUS, aio
from .support.processes import eventually

CALL_TIMEOUT = 0.5  # seconds: the caller's deadline, far inside the daemon's ack_timeout (5 s)


async def test_reports_of_a_call_past_its_deadline_are_not_committed(
    aio_loop, database_url, settings, nursery, db, sensors
):
    running = await nursery.start(
        daemon.run, settings.replace(writer_lanes=1, pool_size=3), database_url
    )
    busy, late, after = sensors[:3]  # one lane: committed in the order they are sent
    channel = Channel("127.0.0.1", running.grpc_port)
    send_status = UnaryUnaryMethod(channel, SEND_STATUS, DeviceStatus, StatusAck)

    async def report(serial: str, deadline: float) -> None:
        # The call's own deadline (grpc-timeout) is what is under test, not a trio one.
        await aio(send_status, DeviceStatus(serial=serial, software_version=""), timeout=deadline)

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as calls:
                async with connect(database_url) as locker, locker.transaction():
                    # Another transaction holds `busy`'s row: the lane's commit waits for it,
                    # and `late`'s report waits in the queue behind it.
                    await locker.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", busy)
                    calls.start_soon(report, busy, 10.0)
                    await _until_waiting_for_lock(db)
                    try:
                        await report(late, CALL_TIMEOUT)
                    except TimeoutError:
                        pass
                    else:
                        raise AssertionError("answered while the lane was blocked")
            # The row is free now, long before the daemon's ack_timeout (5 s): `busy` commits,
            # then the lane takes `late`'s report, past its caller's deadline. A later report
            # on the lane is acknowledged only once the writer is done with it.
            await report(after, 10.0)
    finally:
        channel.close()
    online = {r["serial"] for r in await db.fetch("SELECT serial FROM sensor WHERE online")}
    assert online == {busy, after}


async def _until_waiting_for_lock(db) -> None:
    """Until some statement of the test database waits for a row lock (the lane's commit)."""

    async def waiting() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )

    await eventually(waiting)
