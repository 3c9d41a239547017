"""Two daemons on one database, relaying to each other (a pytest plugin: conftest.py loads
it), and what the relay tests do with them: report to one, watch from the other.

`peers` starts them on `relay_settings`: the test's settings (PostgreSQL NOTIFY) unless a test
module overrides that fixture (tests/test_relay_nats.py points it at a NATS server)."""

from __future__ import annotations

import pytest
import trio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.ingest.proto.status import DeviceStatus
from droneshield.relay import Relay

from .grpc_clients import aio, grpclib_stub
from .live_client import open_live

START_TIMEOUT = 15.0  # seconds for both daemons to be ready


@pytest.fixture
def relay_settings(settings: Settings) -> Settings:
    return settings


@pytest.fixture
async def peers(
    aio_loop: None,
    database_url: str,
    relay_settings: Settings,
    sensors: list[str],
    nursery: trio.Nursery,
) -> tuple[daemon.Running, daemon.Running]:
    """Daemons A and B, started one after the other once the fleet is seeded."""
    with trio.fail_after(START_TIMEOUT):
        a = await nursery.start(daemon.run, relay_settings, database_url)
        b = await nursery.start(daemon.run, relay_settings, database_url)
    return a, b


async def peer_watches(relay: Relay, serial: str) -> None:
    """Once `relay` knows a peer's client watches `serial` (its announcement came over the
    bus)."""
    await relay.wait_for(lambda: relay.peers.wants(serial))


async def report(port: int, serial: str) -> None:
    """One unary report of `serial` to the daemon on gRPC `port`, acknowledged."""
    async with grpclib_stub(port) as stub:
        await aio(stub.send_status, DeviceStatus(serial=serial, software_version=""))


async def watched_from_afar(
    a: daemon.Running, b: daemon.Running, serial: str, reports: int
) -> list[str]:
    """Send `reports` reports of `serial` to daemon `a` while a client of `b` watches it; the
    `lastSeenAt` of each change the client receives."""
    async with open_live(b.http_port) as client:
        await client.subscribe([serial])
        await peer_watches(a.relay, serial)
        seen = []
        for _ in range(reports):
            await report(a.grpc_port, serial)
            message = await client.next("sensor")
            assert [item["serial"] for item in message["sensors"]] == [serial]
            seen.append(message["sensors"][0]["lastSeenAt"])
    return seen
