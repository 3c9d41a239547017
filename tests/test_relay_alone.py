"""A daemon alone sends nothing to the bus, and a peer that comes later still misses nothing:
the relay's peer protocol on MockClock (autojump) over in-memory buses, then two real daemons
over NOTIFY."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.domain import SensorState
from droneshield.hub import Hub
from droneshield.relay import ALONE_AFTER, INTEREST_TTL, Relay

from .support.live_client import open_live
from .support.memory_bus import Exchange
from .support.relay_peers import START_TIMEOUT, report


def _online(serial: str) -> SensorState:
    """A transition: the sensor came online."""
    now = datetime.now(UTC)
    return SensorState(1, serial, None, "online", now, now, before=("never", None))


async def _start(nursery: trio.Nursery, exchange: Exchange, hub: Hub) -> Relay:
    relay = Relay(hub, exchange.bus())
    await nursery.start(relay.serve)
    return relay


async def test_a_daemon_alone_stops_sending_once_no_peer_can_be_unheard(autojump_clock, nursery):
    exchange = Exchange()
    hub = Hub()
    relay = await _start(nursery, exchange, hub)
    hub.publish([_online("DS-1")])  # a peer may not have answered yet: sent
    await trio.sleep(ALONE_AFTER)
    hub.publish([_online("DS-2")])
    await trio.sleep(INTEREST_TTL)
    assert exchange.changes() == ["DS-1"]
    assert (relay.sent, relay.unsent) == (1, 1)


async def test_a_peer_that_comes_later_gets_every_transition_and_reloads_for_those_unsent(
    autojump_clock, nursery
):
    exchange = Exchange()
    hub_a, hub_b = Hub(), Hub()
    a = await _start(nursery, exchange, hub_a)
    await trio.sleep(ALONE_AFTER)
    hub_a.publish([_online("DS-1")])  # alone: left unsent
    with hub_b.subscribe() as page:  # B's client loaded its page before B heard of A
        b = await _start(nursery, exchange, hub_b)
        with trio.fail_after(1):
            await b.wait_for(lambda: page.overflowed)  # A listed B under 1: reload
        assert (a.peers.peers, b.peers.peers, a.unsent) == (1, 1, 1)
        assert page.take() == []
        hub_a.publish([_online("DS-2")])
        with trio.fail_after(1):
            await page.wait()
        assert [change.serial for change in page.take()] == ["DS-2"]
    assert exchange.changes() == ["DS-2"]


async def test_a_peer_that_starts_while_a_daemon_still_sends_does_not_reload(
    autojump_clock, nursery
):
    exchange = Exchange()
    hub_a, hub_b = Hub(), Hub()
    await _start(nursery, exchange, hub_a)
    with hub_b.subscribe() as page:
        b = await _start(nursery, exchange, hub_b)
        with trio.fail_after(1):
            await b.wait_for(lambda: b.peers.peers == 1)  # A's answer, listing B under 0
        await trio.sleep(3 * INTEREST_TTL)
    assert not page.overflowed


async def test_a_peer_cut_off_until_it_lapsed_reloads_only_if_transitions_went_unsent(
    autojump_clock, nursery
):
    exchange = Exchange()
    hub_a, hub_b = Hub(), Hub()
    a = await _start(nursery, exchange, hub_a)
    with hub_b.subscribe() as page:
        b = await _start(nursery, exchange, hub_b)
        for transitions, reloads in ((0, False), (1, True)):
            exchange.muted.add(b.instance)  # B's messages are lost: A lets it lapse
            with trio.fail_after(2 * INTEREST_TTL):
                await a.wait_for(lambda: a.peers.peers == 0)
            await trio.sleep(ALONE_AFTER)
            hub_a.publish([_online(f"DS-{n}") for n in range(transitions)])
            exchange.muted.clear()
            with trio.move_on_after(3 * INTEREST_TTL):
                await b.wait_for(lambda: page.overflowed)
            assert (a.peers.peers, a.unsent, page.overflowed) == (1, transitions, reloads)
            page.take()


async def test_a_lone_daemon_sends_nothing_and_a_new_peer_still_gets_its_transitions(
    aio_loop, database_url, settings: Settings, sensors, nursery, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("droneshield.relay.ALONE_AFTER", 0.0)
    with trio.fail_after(START_TIMEOUT):
        a = await nursery.start(daemon.run, settings, database_url)
        await report(a.grpc_port, sensors[0])  # came online, with no peer to tell
        b = await nursery.start(daemon.run, settings, database_url)
        async with open_live(b.http_port) as client:
            await client.subscribe([sensors[1]])
            await a.relay.wait_for(lambda: a.relay.peers.peers == 1)
            await report(a.grpc_port, sensors[1])
            message = await client.next("sensor")
    assert [(s["serial"], s["status"]) for s in message["sensors"]] == [(sensors[1], "online")]
    assert (a.relay.unsent, a.relay.sent) == (1, 1)
