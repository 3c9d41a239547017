"""`/metrics` on a running daemon: fleet gauges from the maintained counters, transitions, and
the deployment files (Prometheus alert rules, Grafana dashboard) checked against what the daemon
exports, so they cannot name a metric that does not exist. The same under `serve --workers 2`
is in test_workers.py."""

from __future__ import annotations

import httpx
import trio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.ingest.proto.status import DeviceStatus

from .support.grpc_clients import aio, grpclib_stub
from .support.processes import eventually
from .support.releases import add_software
from .support.scrapes import delta, scrape, value


async def _report(port: int, serial: str, version: str = "") -> None:
    async with grpclib_stub(port) as stub:
        await aio(stub.send_status, DeviceStatus(serial=serial, software_version=version))


async def test_fleet_gauges_count_sensors_by_status_version_and_unreleased_version(
    running, api, db, sensors
):
    await add_software(db, "1.0.0")
    with trio.fail_after(10):
        before = await scrape(api)
        for serial, version in zip(sensors, ["1.0.0", "1.0.0", "9.9.9"], strict=False):
            await _report(running.grpc_port, serial, version)
        got = await scrape(api)
    assert value(got, "droneshield_fleet_readable") == 1
    assert value(got, "droneshield_sensors", status="online") == 3
    assert value(got, "droneshield_sensors", status="offline") == 0
    assert value(got, "droneshield_sensors", status="never") == 7
    assert value(got, "droneshield_sensors_by_version", version="v1.0.0") == 2
    assert value(got, "droneshield_sensors_by_version", version="none") == 8
    # 9.9.9 was never uploaded: its reports are counted fleet-wide by version.
    assert value(got, "droneshield_unreleased_version_reports", version="v9.9.9") == 1
    assert value(got, "droneshield_unreleased_version_last_seen_seconds", version="v9.9.9")
    assert delta(before, got, "droneshield_transitions_total", to="online") == 3


async def test_retired_sensors_are_a_status_of_their_own(running, api, db, sensors):
    with trio.fail_after(10):
        await _report(running.grpc_port, sensors[0])
        for serial in sensors[:3]:
            assert (await api.delete(f"/sensors/{serial}")).status_code == 204
        assert (await api.delete(f"/sensors/{sensors[0]}")).status_code == 204  # already
        retired = await scrape(api)
        restored = await api.post("/sensors", json={"sensors": [{"serial": sensors[1]}]})
        assert restored.status_code == 201, restored.text
        after = await scrape(api)
    assert value(retired, "droneshield_sensors", status="retired") == 3
    assert value(retired, "droneshield_sensors", status="online") == 0
    assert value(retired, "droneshield_sensors", status="never") == 7
    assert value(after, "droneshield_sensors", status="retired") == 2
    assert value(after, "droneshield_sensors", status="never") == 8
    # The counter is maintained, and agrees with a count of the rows.
    assert await db.fetchval("SELECT n FROM retired_count") == await db.fetchval(
        "SELECT count(*) FROM sensor WHERE retired_at IS NOT NULL"
    )


async def test_transitions_count_offline_expiry_and_coming_back(
    aio_loop, database_url, nursery, tmp_path, sensors
):
    settings = Settings(
        data_dir=tmp_path, http_port=0, grpc_port=0, offline_after=0.5, wheel_resolution=0.1
    )
    with trio.fail_after(20):
        running = await nursery.start(daemon.run, settings, database_url)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as api:
            before = await scrape(api)
            await _report(running.grpc_port, sensors[0])

            async def went(to: str, n: int) -> bool:
                return delta(before, await scrape(api), "droneshield_transitions_total", to=to) == n

            await eventually(lambda: went("offline", 1))
            offline = await scrape(api)
            await _report(running.grpc_port, sensors[0])  # back online
            await eventually(lambda: went("offline", 2))
            final = await scrape(api)
    assert value(offline, "droneshield_sensors", status="offline") == 1
    assert delta(before, offline, "droneshield_transitions_total", to="online") == 1
    assert delta(before, final, "droneshield_transitions_total", to="online") == 2
