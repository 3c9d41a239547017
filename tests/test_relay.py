"""Cross-instance fan-out: daemons on one database, over NOTIFY/LISTEN or NATS JetStream, and
only what the peers' clients need."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
import trio
from hypothesis import given
from hypothesis import strategies as st

from droneshield.bus.notify import PAYLOAD_MAX
from droneshield.domain import Edit, SensorState
from droneshield.interest import PeerInterest
from droneshield.relay import decode, encode, encode_interest, resync_payload

from .support.live_client import open_live
from .support.relay_peers import report, watched_from_afar

serials = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128)
moments = st.none() | st.datetimes(timezones=st.just(UTC))
versions = st.none() | st.from_regex(r"\d{1,3}\.\d{1,3}\.\d{1,3}(-rc\.\d)?", fullmatch=True)
changes = st.builds(
    SensorState,
    id=st.integers(1, 2**62),
    serial=serials,
    version=versions,
    status=st.sampled_from(["never", "online", "offline"]),
    last_seen_at=moments,
    status_changed_at=moments,
    reported_version=versions,
    heartbeat=st.booleans(),
    site=st.none() | st.text(max_size=20),
    edit=st.none() | st.builds(Edit, label=st.none() | st.text(max_size=20), retired=st.booleans()),
    before=st.none() | st.tuples(st.sampled_from(["never", "online", "offline"]), versions),
)


@given(st.lists(changes, max_size=300))
def test_payloads_round_trip_and_fit_notify(batch):
    payloads = encode("instance-a", batch, PAYLOAD_MAX)
    assert all(len(p.encode()) < PAYLOAD_MAX for p in payloads)
    decoded = [c for p in payloads for c in decode(p, lambda serial: True)]
    assert decoded == batch


@given(st.lists(changes, max_size=50))
def test_only_wanted_serials_are_decoded(batch):
    wanted = {c.serial for c in batch[::2]}
    decoded = [c for p in encode("a", batch, PAYLOAD_MAX) for c in decode(p, wanted.__contains__)]
    assert decoded == [c for c in batch if c.serial in wanted]


def test_payloads_of_a_daemon_that_predates_reported_versions_still_decode():
    old = '{"i": "a", "c": [[7, "S-7", "1.0.0", "online", null, null]]}'
    assert decode(old, lambda serial: True) == [
        SensorState(7, "S-7", "1.0.0", "online", None, None)
    ]


def test_resync_payload_asks_for_a_resync():
    assert decode(resync_payload("a"), lambda serial: True) is None


async def test_report_on_one_daemon_reaches_clients_of_another(peers, sensors):
    a, b = peers
    with trio.fail_after(15):
        async with open_live(a.http_port) as client:
            await client.subscribe([sensors[0]])
            await report(b.grpc_port, sensors[0])
            message = await client.next("sensor")
    assert [item["serial"] for item in message["sensors"]] == [sensors[0]]
    assert message["sensors"][0]["status"] == "online"
    assert a.relay.received == 1


async def test_retirement_on_one_daemon_reaches_clients_of_another(peers, sensors):
    a, b = peers
    with trio.fail_after(15):
        async with (
            open_live(a.http_port) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.http_port}") as api,
        ):
            await client.subscribe([sensors[0]])
            assert (await api.delete(f"/sensors/{sensors[0]}")).status_code == 204
            [item] = (await client.next("sensor"))["sensors"]
    assert (item["serial"], item["retired"], item["label"]) == (sensors[0], True, None)


def _marker(serial: str) -> SensorState:
    return SensorState(-1, serial, "9.9.9", "offline", None, datetime.now(UTC))


async def test_own_changes_are_not_delivered_twice(peers, sensors):
    a, _ = peers  # with a peer, so that A sends its changes
    with trio.fail_after(15):
        async with open_live(a.http_port) as client:
            await client.subscribe([sensors[0]])
            await report(a.grpc_port, sensors[0])
            first = await client.next("sensor")
            await a.relay.wait_for(lambda: a.relay.sent == 1)
            # The bus keeps each sender's order: a message of A's that comes back after this
            # one comes after the change.
            back = a.relay.own_skipped
            await a.relay.wait_for(lambda: a.relay.own_skipped > back)
            a.hub.publish([_marker(sensors[0])])
            second = await client.next("sensor")
    assert first["sensors"][0]["status"] == "online"
    assert second["sensors"][0]["version"] == "v9.9.9"  # nothing came in between
    assert a.relay.received == 0


async def test_lost_listen_connection_is_re_established_and_clients_resync(running, db, sensors):
    with trio.fail_after(15):
        async with open_live(running.http_port) as client:
            await client.subscribe([sensors[0]])
            killed = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                # This test's database only: other daemons may share the server.
                "WHERE query LIKE 'LISTEN %droneshield_sensor%' AND datname = current_database()"
            )
            await client.next("resync")
            payloads = encode("another-daemon", [_marker(sensors[0])], PAYLOAD_MAX)
            await db.execute("SELECT pg_notify('droneshield_sensor', $1)", payloads[0])
            message = await client.next("sensor")
    assert killed == 1
    assert message["sensors"][0]["version"] == "v9.9.9"


@given(st.lists(serials, max_size=400, unique=True), st.booleans())
def test_interest_announcements_fit_and_assemble_into_the_peers_interest(watched, everything):
    parts = encode_interest("peer", 7, everything, watched, {"a" * 16: 9}, PAYLOAD_MAX)
    assert all(len(p.encode()) < PAYLOAD_MAX for p in parts)
    interest = PeerInterest(ttl=15.0)
    for part in reversed(parts):  # parts may arrive in any order; only all of them count
        message = orjson.loads(part)
        assert not interest.wants(watched[0]) if watched and not everything else True
        interest.update("peer", *message["w"][:3], bool(message["w"][3]), message["s"], 0.0)
    assert interest.everything == everything
    assert all(interest.wants(serial) for serial in watched)
    assert interest.wants("DS-not-watched") == everything


def test_a_peers_interest_lapses_unless_refreshed():
    interest = PeerInterest(ttl=15.0)
    interest.update("a", 0, 0, 1, False, ["DS-1"], now=100.0)
    interest.update("b", 0, 0, 1, False, ["DS-2"], now=100.0)
    interest.expire(now=110.0)
    interest.update("a", 1, 0, 1, False, ["DS-1"], now=110.0)  # a refreshes, b has died
    interest.expire(now=115.0)
    assert (interest.wants("DS-1"), interest.wants("DS-2"), interest.peers) == (True, False, 1)
    interest.expire(now=125.0)
    assert not interest.wants("DS-1")


def test_a_newer_announcement_replaces_an_older_one_and_stale_parts_are_ignored():
    interest = PeerInterest(ttl=15.0)
    interest.update("a", 3, 0, 1, False, ["DS-1"], now=0.0)
    interest.update("a", 4, 0, 2, False, ["DS-2"], now=1.0)  # half of a new one: not yet
    interest.update("a", 3, 0, 1, True, [], now=1.0)  # a late part of an old one
    assert (interest.wants("DS-1"), interest.wants("DS-2")) == (True, False)
    interest.update("a", 4, 1, 2, False, ["DS-3"], now=1.0)
    assert [interest.wants(s) for s in ("DS-1", "DS-2", "DS-3")] == [False, True, True]


async def test_heartbeats_reach_a_client_on_another_daemon_that_watches_the_sensor(peers, sensors):
    a, b = peers
    with trio.fail_after(15):
        seen = await watched_from_afar(a, b, sensors[0], 3)  # online, then two heartbeats
    assert len(set(seen)) == 3
    assert a.relay.heartbeats_kept == 0
    assert b.relay.received == 3


async def test_heartbeats_no_peer_watches_stay_home_but_transitions_go(peers, sensors):
    a, b = peers
    with trio.fail_after(15):
        async with open_live(b.http_port) as client:
            await client.subscribe([])  # a client watching nothing
            await report(a.grpc_port, sensors[0])  # came online: a transition
            await report(a.grpc_port, sensors[0])  # a heartbeat nobody watches
            await report(a.grpc_port, sensors[1])  # came online
            # Whether a change goes is decided as the writer publishes it, so once both
            # transitions are sent the heartbeat has been kept for good.
            await a.relay.wait_for(lambda: a.relay.sent >= 2)
            await b.relay.wait_for(lambda: b.relay.peers.peers == 1)  # A's (empty) interest
            await a.relay.wait_for(lambda: a.relay.peers.peers == 1)  # and B's
    assert a.relay.heartbeats_kept == 1
    assert a.relay.sent == 2
