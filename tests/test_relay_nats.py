"""The relay over NATS JetStream: daemons on one database exchanging changes through a private
nats-server (its own port and store), which the tests kill and restart mid-stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from droneshield import daemon
from droneshield.config import Settings

from .support.live_client import open_live
from .support.nats_server import NatsServer, missing, private_nats
from .test_relay import _peer_watches, _report, watched_from_afar


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    async with private_nats() as server:
        yield server


@pytest.fixture
def nats_settings(settings: Settings, nats_server: NatsServer) -> Settings:
    return settings.replace(relay_url=nats_server.url)


async def test_report_on_one_daemon_reaches_a_watching_client_of_another_over_nats(
    aio_loop, database_url, nats_settings, sensors, nursery
):
    with trio.fail_after(15):
        a = await nursery.start(daemon.run, nats_settings, database_url)
        b = await nursery.start(daemon.run, nats_settings, database_url)
        seen = await watched_from_afar(a, b, sensors[0], 2)  # online, then a heartbeat
    assert len(set(seen)) == 2
    assert b.relay.received == 2
    assert a.relay.own_skipped > 0  # the stream gives a daemon its own messages back


async def test_a_daemon_replays_what_it_missed_while_nats_was_down_instead_of_resyncing(
    aio_loop, database_url, nats_settings, nats_server, sensors, nursery
):
    with trio.fail_after(20):
        a = await nursery.start(daemon.run, nats_settings, database_url)
        b = await nursery.start(daemon.run, nats_settings, database_url)
        async with open_live(b.http_port) as client:
            await client.subscribe(sensors[:3])
            await _peer_watches(a.relay, sensors[0])
            await _report(a.grpc_port, sensors[0])
            await client.next("sensor")
            await nats_server.kill()
            await _report(a.grpc_port, sensors[1])  # committed while the relay is away
            await _report(a.grpc_port, sensors[2])
            await nats_server.start()
            got: set[str] = set()
            while len(got) < 2:
                message = await client.receive()
                assert message["type"] != "resync"
                if message["type"] == "sensor":
                    got.update(item["serial"] for item in message["sensors"])
    assert got == set(sensors[1:3])
    assert b.relay._bus.replays >= 1
    assert b.relay._bus.gaps == 0
