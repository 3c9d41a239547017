"""The relay over NATS JetStream: daemons on one database exchanging changes through a private
nats-server (its own port and store), which the tests kill and restart mid-stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from droneshield.bus.jetstream import Names, default_stream
from droneshield.config import Settings
from droneshield.relay import open_bus

from .support.live_client import open_live
from .support.nats_server import NatsServer, missing, private_nats
from .support.relay_peers import peer_watches, report, watched_from_afar


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    async with private_nats() as server:
        yield server


@pytest.fixture
def relay_settings(settings: Settings, nats_server: NatsServer) -> Settings:
    """`peers` relay over the private server."""
    return settings.replace(relay_url=nats_server.url)


async def test_report_on_one_daemon_reaches_a_watching_client_of_another_over_nats(peers, sensors):
    a, b = peers
    with trio.fail_after(15):
        seen = await watched_from_afar(a, b, sensors[0], 2)  # online, then a heartbeat
    assert len(set(seen)) == 2
    assert b.relay.received == 2
    assert a.relay.own_skipped > 0  # the stream gives a daemon its own messages back


async def test_a_daemon_replays_what_it_missed_while_nats_was_down_instead_of_resyncing(
    peers, nats_server, sensors
):
    a, b = peers
    with trio.fail_after(20):
        async with open_live(b.http_port) as client:
            await client.subscribe(sensors[:3])
            await peer_watches(a.relay, sensors[0])
            await report(a.grpc_port, sensors[0])
            await client.next("sensor")
            await nats_server.kill()
            await report(a.grpc_port, sensors[1])  # committed while the relay is away
            await report(a.grpc_port, sensors[2])
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


@pytest.mark.parametrize(
    ("database_url", "stream"),
    [
        ("postgresql://fleet@db:5432/fleet-a", "DRONESHIELD_RELAY_fleet-a"),
        ("postgresql://fleet@db/prod.eu?sslmode=require", "DRONESHIELD_RELAY_prod_eu"),
        ("postgresql://postgres:@/?host=/run/pg&dbname=site7", "DRONESHIELD_RELAY_site7"),
    ],
)
def test_each_database_relays_on_a_stream_of_its_own_by_default(database_url, stream):
    assert default_stream(database_url) == stream
    bus = open_bus("nats://127.0.0.1:4222", None, None, database_url)  # type: ignore[arg-type]
    assert bus.names == Names(stream)
    named = open_bus("nats://127.0.0.1:4222", "EU_1", None, database_url)  # type: ignore[arg-type]
    assert (named.names.stream, named.names.shard(3)) == ("EU_1", "droneshield.EU_1.sensor.3")


@pytest.mark.parametrize("name", ["", "a.b", "a b", "x>", "*", "n" * 65])
def test_a_stream_name_nats_would_refuse_is_refused_at_start(name):
    with pytest.raises(ValueError, match="relay_stream must be 1 to 64 letters"):
        Settings(relay_stream=name)
