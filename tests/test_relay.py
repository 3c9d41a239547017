"""Cross-instance fan-out: two daemons on one database, NOTIFY/LISTEN between them."""

from __future__ import annotations

from datetime import UTC, datetime

import trio
from hypothesis import given
from hypothesis import strategies as st

from droneshield import daemon
from droneshield.domain import SensorState
from droneshield.ingest.proto.status import DeviceStatus
from droneshield.relay import PAYLOAD_MAX, decode, encode, resync_payload

from .support.grpc_clients import aio, grpclib_stub
from .support.live_client import open_live

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
)


@given(st.lists(changes, max_size=300))
def test_payloads_round_trip_and_fit_notify(batch):
    payloads = encode("instance-a", batch)
    assert all(len(p.encode()) < PAYLOAD_MAX for p in payloads)
    decoded = [c for p in payloads for c in decode(p, lambda serial: True)]
    assert decoded == batch


@given(st.lists(changes, max_size=50))
def test_only_wanted_serials_are_decoded(batch):
    wanted = {c.serial for c in batch[::2]}
    decoded = [c for p in encode("a", batch) for c in decode(p, wanted.__contains__)]
    assert decoded == [c for c in batch if c.serial in wanted]


def test_payloads_of_a_daemon_that_predates_reported_versions_still_decode():
    old = '{"i": "a", "c": [[7, "S-7", "1.0.0", "online", null, null]]}'
    assert decode(old, lambda serial: True) == [
        SensorState(7, "S-7", "1.0.0", "online", None, None)
    ]


def test_resync_payload_asks_for_a_resync():
    assert decode(resync_payload("a"), lambda serial: True) is None


async def test_report_on_one_daemon_reaches_clients_of_another(
    aio_loop, database_url, settings, sensors, nursery
):
    with trio.fail_after(15):
        a = await nursery.start(daemon.run, settings, database_url)
        b = await nursery.start(daemon.run, settings, database_url)
        async with open_live(a.http_port) as client, grpclib_stub(b.grpc_port) as stub:
            await client.subscribe([sensors[0]])
            await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version=""))
            message = await client.next("sensor")
    assert [item["serial"] for item in message["sensors"]] == [sensors[0]]
    assert message["sensors"][0]["status"] == "online"
    assert a.relay.received == 1


def _marker(serial: str) -> SensorState:
    return SensorState(-1, serial, "9.9.9", "offline", None, datetime.now(UTC))


async def test_own_changes_are_not_delivered_twice(running, sensors):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client, grpclib_stub(running.grpc_port) as stub:
            await client.subscribe([sensors[0]])
            await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version=""))
            first = await client.next("sensor")
            # Polled, bounded by fail_after: our notification coming back has no event.
            while not running.relay.own_skipped:  # noqa: ASYNC110
                await trio.sleep(0.01)
            running.hub.publish([_marker(sensors[0])])
            second = await client.next("sensor")
    assert first["sensors"][0]["status"] == "online"
    assert second["sensors"][0]["version"] == "v9.9.9"  # nothing came in between
    assert running.relay.received == 0


async def test_lost_listen_connection_is_re_established_and_clients_resync(running, db, sensors):
    with trio.fail_after(15):
        async with open_live(running.http_port) as client:
            await client.subscribe([sensors[0]])
            killed = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                # This test's database only: other daemons may share the server.
                "WHERE query LIKE 'LISTEN %' AND datname = current_database()"
            )
            await client.next("resync")
            payloads = encode("another-daemon", [_marker(sensors[0])])
            await db.execute("SELECT pg_notify('droneshield_sensor', $1)", payloads[0])
            message = await client.next("sensor")
    assert killed == 1
    assert message["sensors"][0]["version"] == "v9.9.9"
