"""Webhooks over real HTTP: the API, and events from real reports, expiries and uploads
delivered to real receivers (signed, batched, retried, failed, filtered by serials or site) by
the daemon's dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import seed
from droneshield.db import webhooks as db_webhooks
from droneshield.db.pool import Connection

from .support.grpc_clients import send_batch
from .support.processes import eventually
from .support.receivers import Received, Receiver, signed_correctly
from .support.releases import pdf, upload

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # No poll within a test: each delivery here was rung for by the change that queued it (a
    # report, an expiry, an upload, a test event), or found at a retry or a lease's end.
    return settings.replace(
        offline_after=1.0,
        wheel_resolution=0.1,
        webhook_allow_hosts="127.0.0.1",
        webhook_timeout=1.0,
        webhook_poll=3600.0,
    )


async def receiver(
    nursery: trio.Nursery, answer: Callable[[Received], int | None] | None = None, **kw: Any
) -> Receiver:
    r = Receiver(**kw) if answer is None else Receiver(answer=answer, **kw)
    return await nursery.start(r.serve)


async def subscribe(
    api: httpx.AsyncClient, url: str, events: list[str], **extra: Any
) -> dict[str, Any]:
    response = await api.post(
        "/webhooks", json={"url": url, "events": events, "secret": SECRET, **extra}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _delivery_is(api: httpx.AsyncClient, hook: int, status: str, attempts: int = 0) -> bool:
    """Whether the webhook's latest event has this status (after at least `attempts`)."""
    [latest, *_] = (await api.get(f"/webhooks/{hook}/deliveries")).json()["items"]
    return latest["status"] == status and latest["attempts"] >= attempts


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_webhook_api_never_returns_or_logs_the_secret(api, nursery, caplog):
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        r = await receiver(nursery)
        created = await subscribe(
            api, r.url, ["sensor.offline", "sensor.online"], filter={"serials": ["DS-1"]}
        )
        assert created["events"] == ["sensor.offline", "sensor.online"]
        assert created["filter"] == {"site": None, "serials": ["DS-1"]}
        assert created["health"] == "ok"
        listed = (await api.get("/webhooks")).json()["items"]
        one = (await api.get(f"/webhooks/{created['id']}")).json()
        assert listed == [one]
        assert SECRET not in (await api.get("/webhooks")).text
        assert "secret" not in one
        assert (await api.delete(f"/webhooks/{created['id']}")).status_code == 204
        missing = await api.get(f"/webhooks/{created['id']}")
        assert missing.status_code == 404
        assert _code(missing) == "webhook_not_found"
        assert (await api.delete(f"/webhooks/{created['id']}")).status_code == 404
    assert caplog.records  # the access log saw every request
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("url", "events", "code"),
    [
        ("ftp://127.0.0.1/x", ["sensor.offline"], "webhook_target_refused"),
        ("http://user:pw@127.0.0.1/x", ["sensor.offline"], "webhook_target_refused"),
        ("http://127.0.0.2/x", ["sensor.offline"], "webhook_target_refused"),
        ("http://10.1.2.3/x", ["sensor.offline"], "webhook_target_refused"),
        ("http://169.254.169.254/latest", ["sensor.offline"], "webhook_target_refused"),
        ("http://[::1]/x", ["sensor.offline"], "webhook_target_refused"),
        ("http://localhost./x", ["sensor.offline"], "webhook_target_refused"),
        # What httpx could not send: a control character, a port that is none, no IDNA form.
        ("http://127.0.0.1/a\x7f", ["sensor.offline"], "webhook_target_refused"),
        ("http://127.0.0.1:0/x", ["sensor.offline"], "webhook_target_refused"),
        ("https://☃.example/x", ["sensor.offline"], "webhook_target_refused"),
        ("http://127.0.0.1/x", ["sensor.exploded"], "invalid_parameter"),
        ("http://127.0.0.1/x", ["fleet.online_below"], "threshold_missing"),
    ],
)
async def test_webhook_targets_and_events_are_checked(api, url, events, code):
    with trio.fail_after(10):
        response = await api.post(
            "/webhooks", json={"url": url, "events": events, "secret": SECRET}
        )
    assert response.status_code == 400, response.text
    assert _code(response) == code
    assert SECRET not in response.text


@pytest.mark.parametrize(
    "extra",
    [{"filters": {"site": "north"}}, {"filter": {"site": "north", "serial": ["DS-00000001"]}}],
)
async def test_a_webhook_with_a_field_it_does_not_know_is_refused(api, extra):
    """A misspelt field was dropped: `filters` stored a webhook for the whole fleet."""
    body = {"url": "http://127.0.0.1:9/x", "events": ["sensor.offline"], "secret": SECRET}
    with trio.fail_after(10):
        response = await api.post("/webhooks", json={**body, **extra})
        listed = (await api.get("/webhooks")).json()
    assert response.status_code == 400, response.text
    assert _code(response) == "invalid_parameter"
    assert "serial" in response.text or "filters" in response.text
    assert listed["items"] == []


@pytest.mark.parametrize(
    ("framing", "answer"),
    [
        (b"Content-Length: %d\r\n" % (65 * 1024), b"413"),
        (b"Transfer-Encoding: chunked\r\n", b"411"),  # else read up to the uploads' limit
    ],
)
async def test_a_webhook_description_is_bounded_however_it_is_sent(running, api, framing, answer):
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", running.http_port) as stream:
            await stream.send_all(
                b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + framing
                + b"\r\n"
                + b"%x\r\n%s\r\n" % (4096, b" " * 4096)
            )
            reply = b""
            while not reply.rstrip().endswith(b"}"):  # the JSON error after the head
                reply += await stream.receive_some()
        listed = (await api.get("/webhooks")).json()
    assert reply.startswith(b"HTTP/1.1 " + answer), reply
    assert (b"request_too_large" if answer == b"413" else b"length_required") in reply
    assert listed["items"] == []


async def test_webhook_writes_need_the_api_key(api_with, settings):
    client = await api_with(settings.replace(api_key="k" * 20))
    with trio.fail_after(10):
        body = {"url": "http://127.0.0.1:9/x", "events": ["sensor.offline"], "secret": SECRET}
        assert (await client.post("/webhooks", json=body)).status_code == 401
        headers = {"Authorization": "Bearer " + "k" * 20}
        created = await client.post("/webhooks", json=body, headers=headers)
        assert created.status_code == 201
        hook = created.json()["id"]
        assert (await client.post(f"/webhooks/{hook}/test")).status_code == 401
        assert (await client.delete(f"/webhooks/{hook}")).status_code == 401
        assert (await client.delete(f"/webhooks/{hook}", headers=headers)).status_code == 204


async def test_online_and_offline_are_delivered_signed_and_batched(api, running, db, nursery):
    await seed.seed(db, 50)
    serials = [seed.serial_for(n) for n in range(1, 51)]
    with trio.fail_after(20):
        r = await receiver(nursery)
        await subscribe(api, r.url, ["sensor.online", "sensor.offline"])
        await send_batch(running.grpc_port, [(s, "") for s in serials])
        await r.wait_until(lambda r: len(r.event_ids()) == 100)
    events = [e for p in r.accepted for e in p.events]
    assert [e["type"] for e in events] == ["sensor.online"] * 50 + ["sensor.offline"] * 50
    assert {e["sensor"]["serial"] for e in events} == set(serials)
    assert events[-1]["sensor"]["status"] == "offline"
    assert all(signed_correctly(SECRET, p) for p in r.accepted)
    assert len(r.accepted) <= 4  # 50 events of one moment share a POST
    for p in r.accepted:
        assert p.headers["x-droneshield-event-ids"] == ",".join(e["id"] for e in p.events)
    ids = [int(i) for i in r.event_ids()]
    assert ids == sorted(ids)  # in order
    assert len(set(ids)) == 100  # each once


async def test_filters_and_event_kinds_choose_what_is_written(api, running, db, nursery):
    await seed.seed(db, 3)
    one, two = seed.serial_for(1), seed.serial_for(2)
    with trio.fail_after(20):
        r = await receiver(nursery)
        await subscribe(api, r.url, ["sensor.offline"], filter={"serials": [one]})
        await send_batch(running.grpc_port, [(one, ""), (two, "")])
        await r.wait_until(lambda r: len(r.event_ids()) == 1)
    [event] = r.accepted[0].events
    assert event["type"] == "sensor.offline"
    assert event["sensor"]["serial"] == one
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1


async def test_no_outbox_rows_without_webhooks(running, db):
    await seed.seed(db, 5)
    with trio.fail_after(10):
        await send_batch(running.grpc_port, [(seed.serial_for(n), "9.9.9") for n in range(1, 6)])
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_unreleased_seen") == 0


async def test_version_changes_unreleased_versions_and_uploads(api, running, db, nursery):
    await seed.seed(db, 2)
    one, two = seed.serial_for(1), seed.serial_for(2)
    kinds = ["sensor.version_changed", "release.uploaded", "version.unreleased_reported"]
    with trio.fail_after(20):
        r = await receiver(nursery)
        await subscribe(api, r.url, kinds)
        await send_batch(running.grpc_port, [(one, "v2.0.0"), (two, "2.0.0")])
        await send_batch(running.grpc_port, [(one, "2.0.0")])  # not the first report any more
        assert (await upload(api, [("software_v2.0.0.pdf", pdf(2000))])).status_code == 201
        await send_batch(running.grpc_port, [(two, "2.0.0")])
        await r.wait_until(lambda r: len(r.event_ids()) == 3)
    events = [e for p in r.accepted for e in p.events]
    assert [e["type"] for e in events] == kinds[::-1][:1] + kinds[1:2] + kinds[:1]
    assert events[0]["version"] == "v2.0.0"
    assert events[0]["sensor"]["serial"] == one
    assert events[1]["release"]["version"] == "v2.0.0"
    assert events[1]["release"]["sizeBytes"] == 2000
    assert events[2]["sensor"] == {**events[2]["sensor"], "serial": two, "version": "v2.0.0"}
    assert events[2]["previousVersion"] is None


async def test_an_upload_alone_is_announced(api, nursery):
    with trio.fail_after(20):
        r = await receiver(nursery)
        await subscribe(api, r.url, ["release.uploaded"])
        assert (await upload(api, [("software_v3.0.0.pdf", pdf(1000))])).status_code == 201
        await r.wait_until(lambda r: len(r.event_ids()) == 1)
    [event] = r.accepted[0].events
    assert event["release"]["version"] == "v3.0.0"


async def test_a_failing_endpoint_is_retried_until_it_answers(api, running, db, nursery):
    await seed.seed(db, 1)
    answers = iter([500, 429, -1])  # a server error, too many requests, a closed connection
    with trio.fail_after(30):
        r = await receiver(nursery, lambda _: next(answers, 200))
        hook = await subscribe(api, r.url, ["sensor.online"])
        await send_batch(running.grpc_port, [(seed.serial_for(1), "")])
        await r.wait_until(lambda r: len(r.accepted) == 1)
        # Each attempt is the same event, with the same id.
        assert len({p.events[0]["id"] for p in r.posts}) == 1
        assert len(r.posts) == 4
        await eventually(lambda: _delivery_is(api, hook["id"], "delivered"))
        [delivery] = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["items"]
    assert delivery["attempts"] == 4
    assert delivery["lastError"] is None
    metrics = (await api.get("/metrics")).text
    assert 'droneshield_webhook_deliveries_total{outcome="retried"}' in metrics


async def test_a_hanging_endpoint_does_not_hold_up_another(api, running, db, nursery):
    await seed.seed(db, 1)
    with trio.fail_after(20):
        hanging = await receiver(nursery, lambda _: None)
        healthy = await receiver(nursery)
        stuck = await subscribe(api, hanging.url, ["sensor.online"])
        await subscribe(api, healthy.url, ["sensor.online"])
        await send_batch(running.grpc_port, [(seed.serial_for(1), "")])
        await healthy.wait_until(lambda r: len(r.accepted) == 1)
        await hanging.wait_until(lambda r: len(r.posts) >= 1)
        await eventually(lambda: _delivery_is(api, stuck["id"], "pending", attempts=1))
        found = (await api.get(f"/webhooks/{stuck['id']}")).json()
    assert found["health"] == "retrying"
    assert "no answer" in found["lastError"]
    assert found["pending"] == 1


async def test_a_refusing_endpoint_fails_its_events_visibly(api, running, db, nursery):
    await seed.seed(db, 1)
    with trio.fail_after(20):
        r = await receiver(nursery, lambda _: 410)
        hook = await subscribe(api, r.url, ["sensor.online"])
        await send_batch(running.grpc_port, [(seed.serial_for(1), "")])
        await r.wait_until(lambda r: len(r.posts) == 1)
        await eventually(lambda: _delivery_is(api, hook["id"], "failed"))
        found = (await api.get(f"/webhooks/{hook['id']}")).json()
    assert found["health"] == "failing"
    [delivery] = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["items"]
    assert delivery["status"] == "failed"
    assert delivery["lastError"].startswith("HTTP 410")
    assert (
        'droneshield_webhook_deliveries_total{outcome="failed"} 1.0'
        in (await api.get("/metrics")).text
    )


async def test_test_event_is_delivered_and_outbox_gauges_exist(api, nursery):
    with trio.fail_after(20):
        r = await receiver(nursery)
        hook = await subscribe(api, r.url, ["release.uploaded"])
        queued = await api.post(f"/webhooks/{hook['id']}/test")
        assert queued.status_code == 202
        await r.wait_until(lambda r: len(r.accepted) == 1)
        assert (await api.post("/webhooks/999/test")).status_code == 404
    [event] = r.accepted[0].events
    assert event["id"] == queued.json()["eventId"]
    assert event["type"] == "webhook.test"
    metrics = (await api.get("/metrics")).text
    assert "droneshield_outbox_depth " in metrics
    assert "droneshield_outbox_oldest_age_seconds " in metrics


async def test_two_daemons_never_send_an_event_twice(
    aio_loop, database_url, settings, db, nursery, tmp_path
):
    await seed.seed(db, 2000)
    with trio.fail_after(60):
        r = await receiver(nursery)
        first: daemon.Running = await nursery.start(daemon.run, settings, database_url)
        await nursery.start(daemon.run, settings.replace(data_dir=tmp_path / "b"), database_url)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.http_port}") as api:
            for n in range(5):  # five webhooks to the same receiver: both daemons have work
                await subscribe(api, f"{r.url}?n={n}", ["sensor.online", "sensor.offline"])
        pairs = [(seed.serial_for(n), "") for n in range(1, 2001)]
        for start in range(0, 2000, 500):
            await send_batch(first.grpc_port, pairs[start : start + 500])
        await r.wait_until(lambda r: len(r.event_ids()) >= 20000)
        await trio.sleep(1)  # anything sent twice would arrive now
    ids = r.event_ids()
    assert len(ids) == len(set(ids)) == 20000


async def _place(db: Connection, site: str, serials: list[str]) -> None:
    await db.execute("UPDATE sensor SET site = $1 WHERE serial = ANY ($2::text[])", site, serials)


async def test_site_filter_delivers_only_that_sites_sensor_events(api, running, db, nursery):
    await seed.seed(db, 6)
    north = [seed.serial_for(n) for n in (1, 2, 3)]
    await _place(db, "north", north)
    await _place(db, "south", [seed.serial_for(4)])
    with trio.fail_after(20):
        r = await receiver(nursery)
        created = await subscribe(
            api,
            r.url,
            ["sensor.online", "sensor.offline", "sensor.version_changed"],
            filter={"site": "north", "serials": [*north[:2], seed.serial_for(4)]},
        )
        assert created["filter"]["site"] == "north"
        # Every site, and sensors with none, report; only north's (and, with serials too,
        # those of both filters) are announced: online, then offline.
        await send_batch(running.grpc_port, [(seed.serial_for(n), "") for n in range(1, 7)])
        await r.wait_until(lambda r: len(r.event_ids()) == 4)
    events = [e for p in r.accepted for e in p.events]
    assert sorted((e["type"], e["sensor"]["serial"]) for e in events) == sorted(
        (kind, s) for kind in ("sensor.online", "sensor.offline") for s in north[:2]
    )
    assert {e["sensor"]["site"] for e in events} == {"north"}
    assert all(signed_correctly(SECRET, p) for p in r.accepted)
    assert await db.fetchval("SELECT count(*) FROM outbox") == 4


@pytest.mark.parametrize("site", ["", "x" * 129, "bad\nsite", 7])
async def test_a_site_filter_must_name_a_site(api, site):
    with trio.fail_after(10):
        response = await api.post(
            "/webhooks",
            json={
                "url": "http://127.0.0.1:9/x",
                "events": ["sensor.offline"],
                "secret": SECRET,
                "filter": {"site": site},
            },
        )
    assert response.status_code == 400, response.text
    assert _code(response) == "invalid_parameter"


async def test_a_site_alert_reaches_its_receiver(aio_loop, database_url, db, settings, nursery):
    await seed.seed(db, 10)
    await db.execute(
        "UPDATE sensor SET site = 'north', online = id <= 2, last_seen_at = now(), "
        "status_changed_at = now() WHERE id <= 5"
    )
    with trio.fail_after(20):
        r = await receiver(nursery)
        hook = await db_webhooks.create(
            db,
            url=r.url,
            events=["fleet.online_below"],
            secret=SECRET,
            site="north",
            serials=None,
            online_below=0.5,
        )
        # The dispatcher checks the shares as it starts: north is at 2 of 5.
        await nursery.start(daemon.run, settings.replace(offline_after=3600.0), database_url)
        await r.wait_until(lambda r: len(r.accepted) == 1)
    [event] = r.accepted[0].events
    assert event["type"] == "fleet.online_below"
    assert event["fleet"] == {
        "online": 2,
        "total": 5,
        "share": 0.4,
        "threshold": 0.5,
        "site": "north",
    }
    assert signed_correctly(SECRET, r.accepted[0])
    assert await db.fetchval("SELECT below FROM webhook WHERE id = $1", hook.id)
