"""The daemon killed with SIGKILL in the middle of batches: nothing acknowledged is lost, and the
next daemon rebuilds presence from the database."""

from __future__ import annotations

import trio

from droneshield.db import seed

from .support.flow import Flow, stored
from .support.processes import eventually, serve
from .support.releases import add_software

VERSION = "1.0.0"
SENSORS = 20_000
CALLERS = 32


async def test_sigkill_mid_batch_loses_no_ack_and_the_next_daemon_expires_its_sensors(
    db, database_url, tmp_path
):
    await seed.seed(db, SENSORS)
    await add_software(db, VERSION)
    serials = [seed.serial_for(n) for n in range(1, SENSORS + 1)]
    with trio.fail_after(90):
        async with serve(database_url, tmp_path) as first:
            flow = Flow(first.grpc_port, serials, VERSION)
            async with trio.open_nursery() as senders:
                senders.start_soon(flow.run, CALLERS)
                await flow.until(acked=500)
                first.spawned.process.kill()  # SIGKILL, calls in flight
                assert await first.spawned.exited() == -9
                # Calls cut off by the kill fail; none may be left hanging.
                await flow.until(failures=1)
                senders.cancel_scope.cancel()
        assert flow.acked <= await stored(db, VERSION)
        online = await db.fetchval("SELECT count(*) FROM sensor WHERE online")
        assert online >= len(flow.acked)
        # A short offline_after and no sweep for an hour: only start-up recovery can know them.
        async with serve(
            database_url, tmp_path, offline_after=1, wheel_resolution=0.1, sweep_interval=3600
        ) as second:
            recovered = await second.spawned.wait_for("presence recovered")

            async def all_offline() -> bool:
                return not await db.fetchval("SELECT count(*) FROM sensor WHERE online")

            await eventually(all_offline)
    offline_events = await db.fetchval("SELECT count(*) FROM sensor_event WHERE kind = 'offline'")
    assert f"presence recovered {online} online sensors" in recovered
    assert offline_events == online
