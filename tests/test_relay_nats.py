"""The relay over NATS JetStream: daemons on one database exchanging changes through a private
nats-server (its own port and store), which the tests kill and restart mid-stream."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
import trio
import trio_asyncio
from nats.js import JetStreamContext

from droneshield.bus import Message
from droneshield.bus.jetstream import (
    ACK_TIMEOUT,
    MAX_AGE,
    JetStreamBus,
    Names,
    _ensure_stream,
    _publish_all,
    default_stream,
)
from droneshield.config import Settings
from droneshield.domain import SensorState
from droneshield.errors import RelayUnavailable
from droneshield.hub import Hub
from droneshield.relay import OUTBOX_MAX, Relay, open_bus

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


async def _watched_then_server_killed(client, a, nats_server, sensors) -> None:  # type: ignore[no-untyped-def]
    """B's client watches three sensors A reports, a change crossed, and NATS is killed.

    Killed once A has its publish acknowledged too, not only once B has the change: an
    unacknowledged publish is sent again when NATS is back (the stream drops that copy by its
    key, tested below), and the replay is the subject here."""
    await client.subscribe(sensors[:3])
    await peer_watches(a.relay, sensors[0])
    sent = a.relay.sent
    await report(a.grpc_port, sensors[0])
    await client.next("sensor")
    await a.relay.wait_for(lambda: a.relay.sent > sent)
    await nats_server.kill()


async def test_a_daemon_replays_what_it_missed_while_nats_was_down_instead_of_resyncing(
    peers, nats_server, sensors
):
    a, b = peers
    with trio.fail_after(20):
        async with open_live(b.http_port) as client:
            await _watched_then_server_killed(client, a, nats_server, sensors)
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


def _serials(message: dict[str, Any]) -> set[str]:
    return {item["serial"] for item in message.get("sensors", ())}


async def test_a_nats_server_that_lost_its_store_gets_the_stream_back_and_clients_resync(
    peers, nats_server, sensors
):
    a, b = peers
    with trio.fail_after(30):
        async with open_live(b.http_port) as client:
            await _watched_then_server_killed(client, a, nats_server, sensors)
            for part in list(nats_server._store.iterdir()):  # the store is lost
                shutil.rmtree(part)
            await nats_server.start()
            await report(a.grpc_port, sensors[1])
            message = await client.receive()  # the change, or told to reload: either will do
            while message["type"] != "resync" and sensors[1] not in _serials(message):
                message = await client.receive()
            await report(a.grpc_port, sensors[2])  # and changes cross again
            while sensors[2] not in _serials(message):
                message = await client.next("sensor")
    assert b.relay._bus.gaps >= 1  # the stream B reads now is a new one


class _Served:
    """A bus serving in a test: what it delivers, and each gap it reports."""

    def __init__(self, bus: JetStreamBus) -> None:
        self.bus = bus
        self._send, self.delivered = trio.open_memory_channel[str](100)
        self.gap = trio.Event()

    def _deliver(self, payload: str) -> None:
        self._send.send_nowait(payload)

    def _gap(self) -> None:
        self.gap.set()


def _messages(*payloads: str) -> list[Message]:
    """Control messages with these payloads, each under a key of its own."""
    return [Message(None, payload, uuid.uuid4().hex) for payload in payloads]


@asynccontextmanager
async def _serving(
    url: str, consumer_check: float = 10.0, ack_timeout: float = ACK_TIMEOUT
) -> AsyncIterator[_Served]:
    bus = JetStreamBus(
        url, "DRONESHIELD_RELAY_test", consumer_check=consumer_check, ack_timeout=ack_timeout
    )
    served = _Served(bus)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await nursery.start(served.bus.serve, served._deliver, served._gap)
        yield served
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _admin(url: str) -> AsyncIterator[JetStreamContext]:
    """Another client of the server (as an operator's, or another daemon's)."""
    nc = await trio_asyncio.aio_as_trio(nats.connect)(url)
    try:
        yield nc.jetstream()
    finally:
        await trio_asyncio.aio_as_trio(nc.close)()


class _Gate:
    """A TCP relay to the server that the test cuts (closing its connections and refusing
    new ones) and opens again: a daemon away for a while, while the server runs on. Or it
    holds what the server sends back (kept, in order) while what the client sends goes on:
    the server stores publishes whose acknowledgements do not arrive."""

    def __init__(self, upstream: int, port: int) -> None:
        self.url = f"nats://127.0.0.1:{port}"
        self._upstream = upstream
        self._open = True
        self._connections: set[trio.CancelScope] = set()
        self._answers = trio.Event()  # set while the server's bytes flow back
        self._answers.set()

    def hold_answers(self) -> None:
        self._answers = trio.Event()

    def release_answers(self) -> None:
        self._answers.set()

    async def _answers_flow(self) -> None:
        await self._answers.wait()

    def cut(self) -> None:
        self._open = False
        for scope in self._connections:
            scope.cancel()

    def reopen(self) -> None:
        self._open = True

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self._open:
                return
            with trio.CancelScope() as scope:
                self._connections.add(scope)
                try:
                    server = await trio.open_tcp_stream("127.0.0.1", self._upstream)
                    async with server, trio.open_nursery() as nursery:
                        nursery.start_soon(_pipe, client, server, nursery.cancel_scope)
                        nursery.start_soon(
                            _pipe, server, client, nursery.cancel_scope, self._answers_flow
                        )
                except OSError:
                    pass
                finally:
                    self._connections.discard(scope)


async def _pipe(
    source: trio.SocketStream,
    sink: trio.SocketStream,
    done: trio.CancelScope,
    flowing: Callable[[], Awaitable[None]] | None = None,
) -> None:
    try:
        async for data in source:
            if flowing is not None:
                await flowing()
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def _gate(upstream: int) -> AsyncIterator[_Gate]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    gate = _Gate(upstream, listeners[0].socket.getsockname()[1])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, gate.handle, listeners)
        yield gate
        nursery.cancel_scope.cancel()


async def test_a_stream_recreated_while_a_daemon_was_away_is_a_gap_however_far_it_got(
    aio_loop, nats_server
):
    names = Names("DRONESHIELD_RELAY_test")
    async with _gate(nats_server.port) as gate, _serving(gate.url) as served:
        with trio.fail_after(20):
            await served.bus.publish(_messages(*(f"old-{n}" for n in range(3))))
            assert [await served.delivered.receive() for _ in range(3)] == [
                "old-0",
                "old-1",
                "old-2",
            ]
            gate.cut()
            async with _admin(nats_server.url) as js:  # the store lost, another daemon first back
                await trio_asyncio.aio_as_trio(js.delete_stream)(names.stream)
                await trio_asyncio.aio_as_trio(_ensure_stream)(js, names)
                new = _messages(*(f"new-{n}" for n in range(5)))  # past the 3 it handled
                await trio_asyncio.aio_as_trio(_publish_all)(js, names, new, ACK_TIMEOUT)
            gate.reopen()
            await served.gap.wait()
            await served.bus.publish(_messages("after"))
            assert await served.delivered.receive() == "after"
    assert served.bus.gaps == 1


async def test_a_publish_finding_the_stream_gone_recreates_it_and_reports_a_gap(
    aio_loop, nats_server
):
    names = Names("DRONESHIELD_RELAY_test")
    async with _serving(nats_server.url) as served:
        with trio.fail_after(20):
            await served.bus.publish(_messages("before"))
            assert await served.delivered.receive() == "before"
            async with _admin(nats_server.url) as js:  # the connection stays up throughout
                await trio_asyncio.aio_as_trio(js.delete_stream)(names.stream)
            with pytest.raises(RelayUnavailable):
                await served.bus.publish(_messages("lost"))
            await served.gap.wait()
            await served.bus.publish(_messages("after"))
            assert await served.delivered.receive() == "after"
    assert served.bus.gaps == 1


async def test_a_consumer_gone_with_its_stream_while_connected_is_noticed_as_a_gap(
    aio_loop, nats_server
):
    """The stream deleted and made again by another daemon, the connection up throughout: the
    daemon's consumer went with the old stream, its own publishes succeed, and it would hear
    nothing more from anyone."""
    names = Names("DRONESHIELD_RELAY_test")
    async with _serving(nats_server.url, consumer_check=0.2) as served:
        with trio.fail_after(20):
            await served.bus.publish(_messages("before"))
            assert await served.delivered.receive() == "before"
            async with _admin(nats_server.url) as js:
                await trio_asyncio.aio_as_trio(js.delete_stream)(names.stream)
                await trio_asyncio.aio_as_trio(_ensure_stream)(js, names)
            await served.gap.wait()
            await served.bus.publish(_messages("after"))
            assert await served.delivered.receive() == "after"
    assert served.bus.gaps == 1


async def test_a_publish_stored_but_not_acknowledged_is_stored_once_when_sent_again(
    aio_loop, nats_server
):
    """The server stored what the daemon sent, the acknowledgement did not come back in time:
    the daemon sends it again, and the stream drops the copy by its key. Another message of
    the same text under another key (a second resync, say) is stored: the key decides."""
    first, second = _messages("first", "second")
    async with _gate(nats_server.port) as gate, _serving(gate.url, ack_timeout=0.3) as served:
        with trio.fail_after(20):
            gate.hold_answers()
            with pytest.raises(RelayUnavailable):
                await served.bus.publish([first])
            gate.release_answers()
            await _taken(served.bus, [first, second])  # the retry, and what came meanwhile
            again = Message(None, "first", "another key")
            await _taken(served.bus, [again, *_messages("last")])
            delivered = [await served.delivered.receive() for _ in range(4)]
    assert delivered == ["first", "second", "first", "last"]


async def _taken(bus: JetStreamBus, messages: list[Message]) -> None:
    """Publish `messages` until an attempt is acknowledged in time (a copy is dropped)."""
    while True:
        try:
            return await bus.publish(messages)
        except RelayUnavailable:
            continue


def _came_online(sensor_id: int) -> SensorState:
    now = datetime.now(UTC)
    return SensorState(
        sensor_id, f"S-{sensor_id}", None, "online", now, now, before=("never", None)
    )


@asynccontextmanager
async def _answers_held_back(nats_server: NatsServer) -> AsyncIterator[tuple[Relay, Relay, _Gate]]:
    """Daemons A and B relaying on a stream; A's connection goes through a gate (its
    acknowledgements can be held back, each attempt timing out after 0.3 s), B's does not."""
    stream = "DRONESHIELD_RELAY_test"
    async with _gate(nats_server.port) as gate, trio.open_nursery() as nursery:
        a = Relay(Hub(), JetStreamBus(gate.url, stream, ack_timeout=0.3))
        b = Relay(Hub(), JetStreamBus(nats_server.url, stream))
        await nursery.start(a.serve)
        await nursery.start(b.serve)
        # Each knows the other before any answer is held: A sends its changes.
        await a.wait_for(lambda: a.peers.peers == 1)
        await b.wait_for(lambda: b.peers.peers == 1)
        yield a, b, gate
        nursery.cancel_scope.cancel()


async def test_a_change_whose_acknowledgement_was_lost_reaches_a_peer_once(aio_loop, nats_server):
    """A's publishes reach the stream, their acknowledgements are held back: A's relay tries
    again (the same messages) until one is acknowledged, and B gets the change once, then the
    next."""
    async with _answers_held_back(nats_server) as (a, b, gate):
        with trio.fail_after(20), b._hub.subscribe(["S-1", "S-2"]) as watching:
            gate.hold_answers()
            a._hub.publish([_came_online(1)])
            await b.wait_for(lambda: b.received == 1)  # stored by A's first attempt
            await a.wait_for(lambda: a.retries >= 2)
            gate.release_answers()
            await a.wait_for(lambda: a.sent == 1)
            a._hub.publish([_came_online(2)])
            while not any(change.serial == "S-2" for change in watching.take()):
                await watching.wait()
    assert b.received == 2


async def test_changes_lost_again_while_a_resync_is_unacknowledged_resync_peers_again(
    aio_loop, nats_server
):
    """A's outbox overflows (its changes are lost to peers): it owes a resync, which the stream
    stores while its acknowledgement is held back, and B's clients reload. It overflows again
    before an attempt is acknowledged: what was lost since that reload needs a resync of its
    own, not a retry of the first (the stream would drop that as a copy)."""

    def overflow(first: int) -> None:
        a._hub.publish(_came_online(n) for n in range(first, first + OUTBOX_MAX + 1))

    async with _answers_held_back(nats_server) as (a, b, gate):
        with trio.fail_after(20), b._hub.subscribe(["S-1"]) as watching:
            gate.hold_answers()
            overflow(1)
            await watching.wait()
            assert watching.overflowed  # told to reload
            watching.take()
            await a.wait_for(lambda: a.retries >= 1)  # the resync's attempt was not answered
            overflow(OUTBOX_MAX + 10)
            await watching.wait()
            assert watching.overflowed
            gate.release_answers()


@pytest.mark.parametrize("max_age", [0.0, 300.0])  # 0: the server's default, no limit
async def test_a_stream_made_without_keys_gets_their_duplicate_window(
    aio_loop, nats_server, max_age
):
    """A stream made by an older daemon (or an operator) keeps the server's two minutes: the
    daemon widens it to as long as the stream keeps messages, never longer (refused)."""
    names = Names("DRONESHIELD_RELAY_test")
    async with _admin(nats_server.url) as js:
        with trio.fail_after(10):
            await trio_asyncio.aio_as_trio(js.add_stream)(
                name=names.stream, subjects=[names.subjects], max_age=max_age
            )
            info = await trio_asyncio.aio_as_trio(_ensure_stream)(js, names)
            stored = await trio_asyncio.aio_as_trio(js.stream_info)(names.stream)
    assert info.config.duplicate_window == stored.config.duplicate_window == (max_age or MAX_AGE)
