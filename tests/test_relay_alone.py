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


class _Daemon:
    """A relay on the exchange, with its hub and bus, that can be stopped."""

    def __init__(self, exchange: Exchange) -> None:
        self.hub = Hub()
        self.bus = exchange.bus()
        self.relay = Relay(self.hub, self.bus)
        self._stop = trio.CancelScope()

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self._stop:
            await self.relay.serve(task_status=task_status)

    def stop(self) -> None:
        self._stop.cancel()


async def _start(nursery: trio.Nursery, exchange: Exchange) -> _Daemon:
    started = _Daemon(exchange)
    await nursery.start(started.run)
    return started


async def _know_each_other(*daemons: _Daemon) -> None:
    with trio.fail_after(1):
        for d in daemons:
            await d.relay.wait_for(lambda d=d: d.relay.peers.peers == len(daemons) - 1)


async def _pair(nursery: trio.Nursery) -> tuple[Exchange, _Daemon, _Daemon]:
    """Two daemons on one exchange that know each other."""
    exchange = Exchange()
    a, b = await _start(nursery, exchange), await _start(nursery, exchange)
    await _know_each_other(a, b)
    return exchange, a, b


async def _cut_off(exchange: Exchange, lost: _Daemon, hearing: _Daemon) -> None:
    """`lost`'s messages are lost on the way until `exchange.muted` is cleared: once this
    returns, `hearing` has let it lapse (and knows no peer)."""
    exchange.muted.add(lost.relay.instance)
    with trio.fail_after(2 * INTEREST_TTL):
        await hearing.relay.wait_for(lambda: hearing.relay.peers.peers == 0)


async def test_a_daemon_alone_stops_sending_once_no_peer_can_be_unheard(autojump_clock, nursery):
    exchange = Exchange()
    a = await _start(nursery, exchange)
    a.hub.publish([_online("DS-1")])  # a peer may not have answered yet: sent
    await trio.sleep(2 * ALONE_AFTER)
    a.hub.publish([_online("DS-2")])
    await trio.sleep(INTEREST_TTL)
    assert exchange.changes() == ["DS-1"]
    assert (a.relay.sent, a.relay.unsent) == (1, 1)


async def test_a_daemon_that_hears_nothing_keeps_sending(autojump_clock, nursery):
    _, a, b = await _pair(nursery)
    a.bus.deaf = True  # A's receiving side is down, B still hears it
    await trio.sleep(2 * INTEREST_TTL)  # nothing arrives to wake `wait_for`
    assert a.relay.peers.peers == 0  # B lapsed
    with b.hub.subscribe(["DS-1"]) as page:
        a.hub.publish([_online("DS-1")])
        with trio.fail_after(1):
            await page.wait()
        assert [change.serial for change in page.take()] == ["DS-1"]
    assert a.relay.unsent == 0


async def test_a_peer_that_comes_later_gets_every_transition_and_reloads_for_those_unsent(
    autojump_clock, nursery
):
    exchange = Exchange()
    a = await _start(nursery, exchange)
    await trio.sleep(2 * ALONE_AFTER)
    a.hub.publish([_online("DS-1")])  # alone: left unsent
    b = _Daemon(exchange)
    with b.hub.subscribe() as page:  # B's client loaded its page before B heard of A
        await nursery.start(b.run)
        with trio.fail_after(1):
            await b.relay.wait_for(lambda: page.overflowed)  # A listed B under 1: reload
        assert (a.relay.peers.peers, b.relay.peers.peers, a.relay.unsent) == (1, 1, 1)
        assert page.take() == []
        a.hub.publish([_online("DS-2")])
        with trio.fail_after(1):
            await page.wait()
        assert [change.serial for change in page.take()] == ["DS-2"]
    assert exchange.changes() == ["DS-2"]


async def test_a_peer_that_comes_later_does_not_reload_when_nothing_went_unsent(
    autojump_clock, nursery
):
    exchange = Exchange()
    a, c = await _start(nursery, exchange), await _start(nursery, exchange)
    await _know_each_other(a, c)
    await trio.sleep(2 * ALONE_AFTER)
    a.hub.publish([_online("DS-1")])  # C is there: sent
    b = _Daemon(exchange)
    with b.hub.subscribe() as page:
        await nursery.start(b.run)
        await _know_each_other(a, b, c)  # A and C list B under 0
        await trio.sleep(3 * INTEREST_TTL)
    assert not page.overflowed
    assert (a.relay.sent, a.relay.unsent) == (1, 0)


async def test_a_peer_cut_off_until_it_lapsed_reloads_only_if_transitions_went_unsent(
    autojump_clock, nursery
):
    exchange, a, b = await _pair(nursery)
    with b.hub.subscribe() as page:
        for transitions, reloads in ((0, False), (1, True)):
            await _cut_off(exchange, b, a)
            a.hub.publish([_online(f"DS-{n}") for n in range(transitions)])
            exchange.muted.clear()
            with trio.move_on_after(3 * INTEREST_TTL):
                await b.relay.wait_for(lambda: page.overflowed)
            assert (a.relay.peers.peers, a.relay.unsent, page.overflowed) == (
                1,
                transitions,
                reloads,
            )
            page.take()


async def test_a_peer_that_left_a_daemon_out_and_went_silent_makes_it_reload(
    autojump_clock, nursery
):
    exchange, a, b = await _pair(nursery)
    with b.hub.subscribe() as page:
        await _cut_off(exchange, b, a)  # A stops hearing B and leaves it out...
        a.hub.publish([_online("DS-1")])  # ...leaves this unsent...
        await trio.sleep(ALONE_AFTER)
        a.stop()  # ...and is gone before B's next announcement would have reached it
        exchange.muted.clear()
        assert not page.overflowed
        with trio.fail_after(2 * INTEREST_TTL):
            await b.relay.wait_for(lambda: page.overflowed)
    assert a.relay.unsent == 1


async def test_a_lone_daemon_sends_nothing_and_a_new_peer_still_gets_its_transitions(
    aio_loop, database_url, settings: Settings, sensors, nursery, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("droneshield.relay.ALONE_AFTER", 0.0)
    with trio.fail_after(START_TIMEOUT):
        a = await nursery.start(daemon.run, settings, database_url)
        await a.relay.wait_for(lambda: a.relay.own_skipped > 0)  # it hears itself: alone
        await report(a.grpc_port, sensors[0])  # came online, with no peer to tell
        b = await nursery.start(daemon.run, settings, database_url)
        async with open_live(b.http_port) as client:
            await client.subscribe([sensors[1]])
            await a.relay.wait_for(lambda: a.relay.peers.peers == 1)
            await report(a.grpc_port, sensors[1])
            message = await client.next("sensor")
            await a.relay.wait_for(lambda: a.relay.sent == 1)
    assert [(s["serial"], s["status"]) for s in message["sensors"]] == [(sensors[1], "online")]
    assert a.relay.unsent == 1
