"""Two daemons on one database (on their own ports and data directories): an upload to one is
known to the other's ingest at once, a silent sensor goes offline exactly once however many
instances tracked it, and when one instance is killed the other keeps serving and its safety
sweep marks the dead one's sensors offline. (A report to one reaching a WebSocket of the other
is pinned in test_relay.py.)"""

from __future__ import annotations

from pathlib import Path

import trio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import seed

from .support.grpc_clients import send, send_batch
from .support.processes import eventually, serve
from .support.releases import pdf, upload

SENSORS = 50


def _instance(settings: Settings, data_dir: Path, **changes: object) -> Settings:
    data_dir.mkdir()
    return settings.replace(data_dir=data_dir, **changes)


async def _provision(db) -> list[str]:  # type: ignore[no-untyped-def]
    await seed.seed(db, SENSORS)
    return [seed.serial_for(n) for n in range(1, SENSORS + 1)]


def _all_offline(db):  # type: ignore[no-untyped-def]
    async def all_offline() -> bool:
        return not await db.fetchval("SELECT count(*) FROM sensor WHERE online")

    return all_offline


async def _offline_events_per_sensor(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rows = await db.fetch(
        "SELECT s.serial, count(e.*) AS n FROM sensor s "
        "LEFT JOIN sensor_event e ON e.sensor_id = s.id AND e.kind = 'offline' GROUP BY s.serial"
    )
    return {r["serial"]: r["n"] for r in rows}


async def test_an_upload_to_one_daemon_is_known_to_the_other_at_once(
    api_with, aio_loop, database_url, settings, sensors, nursery, tmp_path
):
    api_a = await api_with(_instance(settings, tmp_path / "a"))
    b = await nursery.start(daemon.run, _instance(settings, tmp_path / "b"), database_url)
    with trio.fail_after(20):
        uploaded = await upload(api_a, [("release_v2.0.0.pdf", pdf())])
        ack = await send(b.grpc_port, sensors[0], "v2.0.0")
    assert uploaded.status_code == 201
    assert ack.message == "ok: online, running v2.0.0"


async def test_a_sensor_both_daemons_track_goes_offline_exactly_once(
    aio_loop, database_url, settings, db, nursery, tmp_path
):
    serials = await _provision(db)
    fast = {"offline_after": 1.0, "wheel_resolution": 0.1}
    a = await nursery.start(daemon.run, _instance(settings, tmp_path / "a", **fast), database_url)
    b = await nursery.start(daemon.run, _instance(settings, tmp_path / "b", **fast), database_url)
    with trio.fail_after(30):
        # Each daemon commits a report of every sensor, so both wheels hold a deadline for it.
        for port in (a.grpc_port, b.grpc_port):
            await send_batch(port, [(s, "") for s in serials])
        await eventually(_all_offline(db))

        async def both_expired() -> bool:
            return a.tracker.statements > 0 and b.tracker.statements > 0

        await eventually(both_expired)
    assert await _offline_events_per_sensor(db) == dict.fromkeys(serials, 1)


async def test_a_killed_daemons_sensors_are_marked_offline_by_the_survivors_sweep(
    aio_loop, database_url, settings, db, nursery, tmp_path
):
    serials = await _provision(db)
    # The survivor's short offline_after and sweep stand for time passing; it tracks none of
    # the killed daemon's sensors (it started before their reports), so only its sweep can act.
    quick = {"offline_after": 1.0, "wheel_resolution": 0.1, "sweep_interval": 0.5}
    survivor = await nursery.start(
        daemon.run, _instance(settings, tmp_path / "b", **quick), database_url
    )
    with trio.fail_after(60):
        async with serve(database_url, tmp_path / "a") as doomed:
            ack = await send_batch(doomed.grpc_port, [(s, "") for s in serials])
            doomed.spawned.process.kill()
            assert await doomed.spawned.exited() == -9
        await eventually(_all_offline(db))
        still_serving = await send(survivor.grpc_port, serials[0])
    assert ack.accepted == SENSORS
    assert len(survivor.tracker.wheel) <= 1  # at most the report just sent
    assert await _offline_events_per_sensor(db) == dict.fromkeys(serials, 1)
    assert still_serving.message.startswith("online")
