"""`/ws` against the running daemon, with a real WebSocket client (trio-websocket)."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from droneshield import daemon
from droneshield.config import WS_MAX_MESSAGE_BYTES_DEFAULT
from droneshield.domain import SensorState, Status
from droneshield.ingest.proto.status import DeviceStatus
from droneshield.web.live import CLIENT_MAX_PENDING, FLUSH_INTERVAL

from .support.grpc_clients import aio, grpclib_stub
from .support.live_client import LiveClient, open_live, open_stalled
from .support.releases import add_software

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def change(
    n: int, *, version: str | None = "1.0.0", status: Status = "online", serial: str = ""
) -> SensorState:
    return SensorState(n, serial or f"T-{n:06d}", version, status, NOW, NOW)


async def _collect_until(client: LiveClient, serial: str) -> list[dict]:
    """Every sensor item received up to and including the flush that carries `serial`."""
    items: list[dict] = []
    while True:
        message = await client.next("sensor")
        items.extend(message["sensors"])
        if any(item["serial"] == serial for item in message["sensors"]):
            return items


async def test_hello_tells_server_time_and_offline_after(running, settings):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            hello = client.hello
    assert hello["offlineAfter"] == settings.offline_after
    assert hello["pingInterval"] == settings.ws_ping_interval
    sent = datetime.fromisoformat(hello["serverTime"])
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5


async def test_report_reaches_subscribed_client_as_the_api_shows_sensors(running, db, sensors):
    await add_software(db, "1.2.3")
    with trio.fail_after(10):
        async with open_live(running.http_port) as client, grpclib_stub(running.grpc_port) as stub:
            await client.subscribe([sensors[0]])
            await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version="v1.2.3"))
            message = await client.next("sensor")
    [item] = message["sensors"]
    row = await db.fetchrow("SELECT * FROM sensor WHERE serial = $1", sensors[0])
    assert item == {
        "id": row["id"],
        "serial": sensors[0],
        "version": "v1.2.3",
        "status": "online",
        "online": True,
        "lastSeenAt": row["last_seen_at"].isoformat(),
        "statusChangedAt": row["status_changed_at"].isoformat(),
        "site": None,
        "retired": False,
        "reportedVersion": None,
        "heartbeat": False,
        "before": {"status": "never", "version": None},  # what the transition changed
    }


async def test_unreleased_version_reaches_the_live_row_marked_and_heartbeats_are_flagged(
    running, db, sensors
):
    await add_software(db, "1.2.3")
    with trio.fail_after(10):
        async with open_live(running.http_port) as client, grpclib_stub(running.grpc_port) as stub:
            await client.subscribe([sensors[0]])
            items = []
            for version in ("v1.2.3", "v4.0.0", "v4.0.0"):
                report = DeviceStatus(serial=sensors[0], software_version=version)
                await aio(stub.send_status, report)
                items.append((await client.next("sensor"))["sensors"][0])
    # The stored version stays the uploaded one; the one reported rides along, marked.
    assert [(i["version"], i["reportedVersion"], i["heartbeat"]) for i in items] == [
        ("v1.2.3", None, False),
        ("v1.2.3", "v4.0.0", True),
        ("v1.2.3", "v4.0.0", True),
    ]


async def test_site_filter_follows_reports_and_expiries_of_that_site(
    aio_loop, database_url, settings, db, sensors, nursery
):
    quick = settings.replace(offline_after=1.0, wheel_resolution=0.1)
    running = await nursery.start(daemon.run, quick, database_url)
    await db.execute("UPDATE sensor SET site = 'north' WHERE serial = ANY($1)", sensors[:2])
    with trio.fail_after(15):
        async with open_live(running.http_port) as client, grpclib_stub(running.grpc_port) as stub:
            await client.subscribe(where={"site": "north", "status": "offline"})
            for serial in (sensors[0], sensors[5]):  # north, and a sensor of no site
                await aio(stub.send_status, DeviceStatus(serial=serial, software_version=""))
            [gone] = (await client.next("sensor"))["sensors"]  # by the expiry, a second later
    assert (gone["serial"], gone["status"]) == (sensors[0], "offline")


async def test_page_subscription_also_gets_sensors_entering_its_filter_not_their_heartbeats(
    running,
):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.send(
                {"type": "subscribe", "serials": ["T-000001"], "filter": {"status": "offline"}}
            )
            await client.next("subscribed")
            running.hub.publish(
                [
                    replace(change(1), heartbeat=True),  # on screen: every change
                    change(2, status="offline"),  # enters the filter
                    change(3, status="online"),  # does not match
                    replace(change(4, status="offline"), heartbeat=True),  # was there already
                ]
            )
            running.hub.publish([change(5, status="offline")])
            items = await _collect_until(client, "T-000005")
    assert sorted(i["serial"] for i in items) == ["T-000001", "T-000002", "T-000005"]


async def test_a_page_being_read_also_gets_sensors_leaving_its_filter(running, sensors):
    """`leaving`: the page's rows are not known until its read is done; one of them that leaves
    the filter meanwhile (gone offline on an online page) would never be told of again. Only
    transitions that took a sensor out are added, not those of sensors outside throughout."""
    page = {"type": "subscribe", "serials": [], "filter": {"status": "online"}}
    with trio.fail_after(10):
        async with open_live(running.http_port) as reading, open_live(running.http_port) as shown:
            await reading.send({**page, "leaving": True})
            await shown.send(page)
            await reading.next("subscribed")
            await shown.next("subscribed")
            running.hub.publish(
                [
                    replace(change(1, status="offline"), before=("online", "1.0.0")),  # leaves
                    replace(change(2, status="offline"), before=("never", None)),  # never in it
                    replace(change(3, version="2.0.0"), before=("online", "1.0.0")),  # stays
                ]
            )
            running.hub.publish([replace(change(9, status="online"), before=("never", None))])
            read = await _collect_until(reading, "T-000009")
            drawn = await _collect_until(shown, "T-000009")
    assert sorted(i["serial"] for i in read) == ["T-000001", "T-000003", "T-000009"]
    assert sorted(i["serial"] for i in drawn) == ["T-000003", "T-000009"]


async def test_a_report_tells_what_its_sensor_was_before(running, sensors):
    """Through the writer: a sensor never seen that reports leaves a `never` page being read."""
    with trio.fail_after(10):
        async with open_live(running.http_port) as reading:
            never = {"status": "never"}
            await reading.send(
                {"type": "subscribe", "serials": [], "filter": never, "leaving": True}
            )
            await reading.next("subscribed")
            await _report(running.grpc_port, sensors[0])
            items = await _collect_until(reading, sensors[0])
    assert [i["status"] for i in items if i["serial"] == sensors[0]] == ["online"]


async def _report(port: int, serial: str) -> None:
    async with grpclib_stub(port) as stub:
        await aio(stub.send_status, DeviceStatus(serial=serial, software_version="1.0.0"))


@pytest.mark.parametrize("leaving", ["yes", 1, None])
async def test_leaving_must_be_true_or_false(running, leaving):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.send(
                {"type": "subscribe", "serials": [], "filter": {}, "leaving": leaving}
            )
            answer = await client.next("error")
    assert answer["error"]["code"] == "invalid_subscribe"


async def test_filter_subscription_by_site_and_case_insensitive_text(running):
    north = [replace(change(n, serial=s), site="north") for n, s in ((1, "ab-X9"), (2, "cd-x9"))]
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.subscribe(where={"site": "north", "q": "X9"})
            running.hub.publish([replace(change(3, serial="ef-x9"), site="south"), *north])
            items = await _collect_until(client, "cd-x9")
    assert [i["serial"] for i in items] == ["ab-X9", "cd-x9"]


async def test_client_gets_only_the_sensors_it_subscribed_to(running):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.subscribe(["T-000002"])
            running.hub.publish([change(1)])
            running.hub.publish([change(2)])
            items = await _collect_until(client, "T-000002")
            await client.subscribe(["T-000003"])
            running.hub.publish([change(2), change(3)])
            later = await _collect_until(client, "T-000003")
    assert [i["serial"] for i in items] == ["T-000002"]
    assert [i["serial"] for i in later] == ["T-000003"]


async def test_filter_subscription_gets_matching_sensors_only(running):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.subscribe(where={"status": "offline", "version": "v2.0.0"})
            running.hub.publish(
                [
                    change(1, status="online", version="2.0.0"),
                    change(2, status="offline", version="1.0.0"),
                    change(3, status="offline", version="2.0.0"),
                ]
            )
            items = await _collect_until(client, "T-000003")
    assert [i["serial"] for i in items] == ["T-000003"]


async def test_an_empty_filter_field_means_any_as_in_the_api(running):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.subscribe(where={"status": "", "version": "", "site": "", "q": ""})
            running.hub.publish([change(1, status="offline"), change(2, status="online")])
            items = await _collect_until(client, "T-000002")
    assert [i["serial"] for i in items] == ["T-000001", "T-000002"]


async def test_burst_of_10000_changes_is_coalesced_to_the_latest_state(running):
    sensors, rounds = 100, 100  # 10,000 changes
    serials = [f"T-{n:06d}" for n in range(sensors)]
    latest: dict[str, dict] = {}
    flushes: list[float] = []
    with trio.fail_after(30):
        async with open_live(running.http_port) as client:
            await client.subscribe(serials)

            async def consume() -> None:
                while any(
                    latest.get(s, {}).get("version") != f"v1.0.{rounds - 1}" for s in serials
                ):
                    message = await client.next("sensor")
                    flushes.append(trio.current_time())
                    latest.update((item["serial"], item) for item in message["sensors"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                start = trio.current_time()
                for r in range(rounds):
                    running.hub.publish(change(n, version=f"1.0.{r}") for n in range(sensors))
                    await trio.sleep(0.005)  # spread the burst over about half a second
    # At most one flush per FLUSH_INTERVAL. Counted, not timed gap by gap: a message delayed
    # on the way arrives closer to the next one than the server sent them.
    elapsed = flushes[-1] - start
    assert len(flushes) <= elapsed / FLUSH_INTERVAL + 2
    assert all(latest[s]["version"] == f"v1.0.{rounds - 1}" for s in serials)


async def test_overflowing_client_is_told_to_resync(running):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.subscribe(where={})
            running.hub.publish(change(n) for n in range(CLIENT_MAX_PENDING + 1))
            message = await client.next("resync")
    assert message["reason"]


def _burst(first: int, count: int) -> Iterable[SensorState]:
    return (change(n) for n in range(first, first + count))


async def test_stalled_client_neither_delays_others_nor_grows_memory(running, settings):
    bursts, size = 20, 10_000
    latencies = []
    with trio.fail_after(60):
        async with open_stalled(running.http_port) as stalled, open_live(running.http_port) as ok:
            await stalled.next("hello")
            await stalled.subscribe(where={})  # everything, and then never read again
            await ok.subscribe(["PROBE"])
            tracemalloc.start()
            try:
                for b in range(bursts):
                    if b == 2:  # the stalled client's buffers are full by now
                        baseline, _ = tracemalloc.get_traced_memory()
                    running.hub.publish(_burst(b * size, size))
                    sent = trio.current_time()
                    running.hub.publish([change(-1, serial="PROBE", version=f"1.0.{b}")])
                    message = await ok.next("sensor")
                    latencies.append(trio.current_time() - sent)
                    assert message["sensors"][0]["version"] == f"v1.0.{b}"
                    assert running.hub.backlog <= CLIENT_MAX_PENDING + 1
                grown = tracemalloc.get_traced_memory()[0] - baseline
            finally:
                tracemalloc.stop()
            assert running.hub.subscribers == 2  # the stalled client was there all along
    # A hub that waited on the stalled client's socket would hold the probe until that socket's
    # send timeout (15 s by default); a hub that does not delivers it in ~10 ms. The bound sits far
    # from both, so a loaded machine's pauses do not fail it.
    assert max(latencies) < settings.send_timeout / 5
    # Queued for the stalled client, 18 bursts of 10,000 changes would take ~50 MB; what may grow is
    # bounded elsewhere (the relay's outbox holds up to OUTBOX_MAX changes for the peers).
    assert grown < 10 * 1024 * 1024


@pytest.fixture
def quick_settings(settings):
    return settings.replace(ws_ping_interval=0.2, ws_timeout=0.6, send_timeout=1.0)


async def test_client_that_does_not_answer_pings_is_dropped(aio_loop, database_url, quick_settings):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(daemon.run, quick_settings, database_url)
            async with open_live(running.http_port, answer_pings=False) as client:
                with pytest.raises(ConnectionClosed) as closed:
                    await client.next("never sent")
            nursery.cancel_scope.cancel()
    assert closed.value.reason.code == 4408


async def _stall(port: int, client: LiveClient, hub) -> None:  # type: ignore[no-untyped-def]
    await client.next("hello")
    await client.subscribe(where={})
    hub.publish(_burst(0, 1000))  # ~200 kB: more than its socket buffers hold


async def test_stalled_client_is_dropped(aio_loop, database_url, quick_settings):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(daemon.run, quick_settings, database_url)
            async with open_stalled(running.http_port) as stalled:
                await _stall(running.http_port, stalled, running.hub)
                # Polled, bounded by fail_after: a drop has no event to wait on.
                while running.hub.subscribers:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def test_stalled_client_does_not_hold_shutdown(aio_loop, database_url, quick_settings):
    async def stall_a_client(port: int, hub, *, task_status) -> None:  # type: ignore[no-untyped-def]
        async with open_stalled(port) as stalled:
            await _stall(port, stalled, hub)
            task_status.started()
            await trio.sleep_forever()

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:  # outlives the daemon, stalled throughout
            async with trio.open_nursery() as nursery:
                running = await nursery.start(daemon.run, quick_settings, database_url)
                await clients.start(stall_a_client, running.http_port, running.hub)
                await trio.testing.wait_all_tasks_blocked()
                stopping = trio.current_time()
                nursery.cancel_scope.cancel()
            stopped = trio.current_time() - stopping
            clients.cancel_scope.cancel()
    assert stopped < quick_settings.send_timeout + 1


async def test_malformed_messages_get_an_error_and_keep_the_connection(running):
    bad = [
        "not json",
        b"\xff\xfe binary",
        "[1, 2]",
        '{"no": "type"}',
        '{"type": "shout"}',
        '{"type": "subscribe"}',
        '{"type": "subscribe", "serials": "T-1"}',
        '{"type": "subscribe", "serials": [1]}',
        '{"type": "subscribe", "serials": [""]}',
        '{"type": "subscribe", "serials": ["T"], "filter": {"site": 5}}',
        '{"type": "subscribe", "filter": {"status": "asleep"}}',
        '{"type": "subscribe", "filter": {"version": "latest"}}',
        '{"type": "subscribe", "filter": {"q": 5}}',
        '{"type": "subscribe", "filter": {"colour": "red"}}',
        '{"type": "subscribe", "serials": [' + ",".join(['"x"'] * 1001) + "]}",
    ]
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            errors = []
            for message in bad:
                await client.send(message)
                errors.append(await client.next("error"))
            await client.subscribe(["T-000001"])
            running.hub.publish([change(1)])
            still = await client.next("sensor")
    assert len(errors) == len(bad)
    assert all(e["error"]["code"] and e["error"]["message"] for e in errors)
    assert still["sensors"][0]["serial"] == "T-000001"


async def test_oversized_message_closes_the_connection_with_1009(running):
    with trio.fail_after(10):
        async with open_live(running.http_port) as client:
            await client.send("x" * (WS_MAX_MESSAGE_BYTES_DEFAULT + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
    assert closed.value.reason.code == 1009


async def test_summary_arrives_on_connect_and_follows_the_fleet(running, db, sensors):
    await add_software(db, "1.0.0")
    with trio.fail_after(10):
        async with open_live(running.http_port) as client, grpclib_stub(running.grpc_port) as stub:
            first = await client.next("summary")
            await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version="1.0.0"))
            second = await client.next("summary")
    assert (first["total"], first["never"], first["online"]) == (10, 10, 0)
    assert second == {
        "type": "summary",
        "total": 10,
        "never": 9,
        "online": 1,
        "offline": 0,
        "versions": [
            {"version": "v1.0.0", "total": 1, "never": 0, "online": 1, "offline": 0},
            {"version": None, "total": 9, "never": 9, "online": 0, "offline": 0},
        ],
        "unreleased": [],
    }


async def test_summary_is_sent_at_most_once_a_second(running, sensors):
    arrivals = []
    with trio.fail_after(20):
        async with open_live(running.http_port) as client, grpclib_stub(running.grpc_port) as stub:
            await client.next("summary")

            async def report_all() -> None:
                for serial in sensors:  # each report changes the totals
                    await aio(stub.send_status, DeviceStatus(serial=serial, software_version=""))
                    await trio.sleep(0.2)  # paces the reports over two seconds

            async with trio.open_nursery() as nursery:
                nursery.start_soon(report_all)
                while True:
                    summary = await client.next("summary")
                    arrivals.append(trio.current_time())
                    if summary["online"] == len(sensors):
                        break
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 2
    assert min(gaps) >= 0.9
