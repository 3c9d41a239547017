"""Webhook delivery across failures: a daemon SIGKILLed between commit and delivery loses no
event, and the fleet alert (of the fleet or of a site) fires once per crossing whichever daemon
checks."""

from __future__ import annotations

import json

import httpx
import trio

from droneshield.db import seed
from droneshield.db import webhooks as db_webhooks
from droneshield.db.pool import Connection, open_pool
from droneshield.dispatcher import Dispatcher
from droneshield.hub import Hub

from .support.grpc_clients import send_batch
from .support.processes import serve
from .support.receivers import Receiver

SECRET = "s3cret-s3cret-s3cret"
DAEMON = {
    "offline_after": 1,
    "wheel_resolution": 0.1,
    "sweep_interval": 1,
    "webhook_allow_hosts": "127.0.0.1",
    "webhook_timeout": 1,
}


async def test_sigkill_between_commit_and_delivery_loses_nothing(
    aio_loop, database_url, db, nursery, tmp_path
):
    await seed.seed(db, 200)
    pairs = [(seed.serial_for(n), "") for n in range(1, 201)]
    killed = trio.Event()
    # Hangs until the first daemon is killed: its events are committed, none is acknowledged.
    receiver = Receiver(answer=lambda _: 200 if killed.is_set() else None)
    await nursery.start(receiver.serve)
    with trio.fail_after(60):
        async with serve(database_url, tmp_path / "a", **DAEMON) as first:
            url = f"http://127.0.0.1:{first.http_port}"
            async with httpx.AsyncClient(base_url=url) as api:
                body = {"url": receiver.url, "events": ["sensor.online", "sensor.offline"]}
                created = await api.post("/webhooks", json={**body, "secret": SECRET})
                assert created.status_code == 201, created.text
            await send_batch(first.grpc_port, pairs)  # acked: committed with their events
            await receiver.wait_until(lambda r: len(r.posts) >= 1)
            first.spawned.process.kill()
            assert await first.spawned.exited() == -9
        killed.set()
        async with serve(database_url, tmp_path / "b", **DAEMON):
            # The second daemon takes the webhook once the dead one's lease lapses, sends the
            # online events again and the offline ones its recovery expires.
            await receiver.wait_until(lambda r: len(set(r.event_ids())) >= 400)
    written = {str(i) for i in await db.fetchval("SELECT array_agg(id) FROM outbox")}
    assert len(written) == 400
    assert written == set(receiver.event_ids())
    pending = await db.fetchval("SELECT count(*) FROM outbox WHERE state <> 'delivered'")
    assert pending in (0, len(receiver.accepted[-1].events))  # the last POST may be unrecorded


async def _webhook(
    db: Connection, events: list[str], *, online_below: float | None, site: str | None = None
) -> db_webhooks.Webhook:
    """A webhook stored directly (its target is never reached in these tests)."""
    return await db_webhooks.create(
        db,
        url="http://127.0.0.1:9/x",
        events=events,
        secret=SECRET,
        site=site,
        serials=None,
        online_below=online_below,
    )


async def test_fleet_alert_fires_once_per_crossing(aio_loop, database_url, db, settings):
    await seed.seed(db, 20)
    hook = await _webhook(db, ["fleet.online_below"], online_below=0.9)

    async def online(n: int) -> None:
        await db.execute(
            "UPDATE sensor SET online = id <= $1, last_seen_at = now(), status_changed_at = now()",
            n,
        )

    async def alerts() -> list[dict[str, object]]:
        rows = await db.fetch("SELECT body FROM outbox WHERE webhook_id = $1 ORDER BY id", hook.id)
        return [r["body"] for r in rows]

    with trio.fail_after(20):
        async with open_pool(database_url, size=2) as pool:
            dispatchers = [Dispatcher(pool, settings, Hub()), Dispatcher(pool, settings, Hub())]
            fired = []
            for n in (20, 17, 15, 18, 18, 17, 20, 10):  # of 20, threshold 0.9, re-armed at 19
                await online(n)
                for d in dispatchers:  # two daemons checking: still one alert per crossing
                    await d.check_fleet()
                fired.append(len(await alerts()))
    assert fired == [0, 1, 1, 1, 1, 1, 1, 2]
    assert '"online": 17' in (await alerts())[0]
    assert '"threshold": 0.9' in (await alerts())[0]


async def test_finished_events_are_pruned_in_small_batches(db):
    hook = await _webhook(db, ["sensor.offline"], online_below=None)
    # 30 events: 10 pending, 10 delivered long ago, 10 failed long ago.
    await db.execute(
        "INSERT INTO outbox (webhook_id, type, occurred_at, body, state, done_at) "
        "SELECT $1, 'sensor.offline', now(), '{}', "
        "(ARRAY['pending', 'delivered', 'failed'])[g % 3 + 1], "
        "CASE WHEN g % 3 = 0 THEN NULL ELSE now() - interval '8 days' END "
        "FROM generate_series(1, 30) g",
        hook.id,
    )
    with trio.fail_after(10):
        week = 7 * 86400.0
        assert [await db_webhooks.prune(db, week, 7) for _ in range(4)] == [7, 7, 6, 0]
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE state = 'pending'") == 10
    assert await db.fetchval("SELECT count(*) FROM outbox") == 10


async def test_a_sites_online_share_fires_once_per_crossing_whatever_other_sites_do(
    aio_loop, database_url, db, settings
):
    # 20 sensors at north, 20 at south: each watch sees only its own site's share.
    await seed.seed(db, 40)
    await db.execute(
        "UPDATE sensor SET site = CASE WHEN id <= 20 THEN 'north' ELSE 'south' END, "
        "online = true, last_seen_at = now(), status_changed_at = now()"
    )
    north = (await _webhook(db, ["fleet.online_below"], online_below=0.9, site="north")).id
    fleet = (await _webhook(db, ["fleet.online_below"], online_below=0.5)).id
    # No sensors there: an empty site never fires.
    empty = (await _webhook(db, ["fleet.online_below"], online_below=0.9, site="nowhere")).id

    async def online(site: str, n: int) -> None:
        await db.execute(
            "UPDATE sensor SET online = row_number <= $2 FROM ("
            " SELECT id, row_number() OVER (ORDER BY id) FROM sensor WHERE site = $1) AS r "
            "WHERE sensor.id = r.id",
            site,
            n,
        )

    async def alerts(hook: int) -> list[dict[str, object]]:
        rows = await db.fetch("SELECT body FROM outbox WHERE webhook_id = $1 ORDER BY id", hook)
        return [json.loads(r["body"])["fleet"] for r in rows]

    with trio.fail_after(20):
        async with open_pool(database_url, size=2) as pool:
            dispatchers = [Dispatcher(pool, settings, Hub()), Dispatcher(pool, settings, Hub())]
            fired = []
            # (site, online of its 20); north's threshold 0.9 re-arms at 19 of 20.
            for site, n in [
                ("south", 0),  # the other site drops: north's watch stays quiet
                ("north", 17),  # north under 18: fires; so does the fleet (17 of 40)
                ("north", 15),
                ("north", 18),  # back at the threshold, under the hysteresis: still below
                ("north", 17),
                ("north", 20),  # re-armed
                ("north", 10),  # fires again
            ]:
                await online(site, n)
                for d in dispatchers:  # two daemons checking: one alert per crossing
                    await d.check_fleet()
                fired.append(len(await alerts(north)))
            assert fired == [0, 1, 1, 1, 1, 1, 2]
            first, second = await alerts(north)
            assert first == {
                "online": 17,
                "total": 20,
                "share": 0.85,
                "threshold": 0.9,
                "site": "north",
            }
            assert second["online"] == 10
            [whole] = await alerts(fleet)
            # The fleet-wide watch stayed below half since: one alert.
            assert whole == {**whole, "online": 17, "total": 40, "site": None}
            assert await alerts(empty) == []
