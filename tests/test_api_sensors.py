"""GET /sensors and /sensors/{serial} over real HTTP against the running daemon."""

from __future__ import annotations

import base64
import json
import random

import pytest
import trio

from droneshield.db import seed
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch

from .support.grpc_clients import aio, grpclib_stub
from .support.processes import eventually
from .support.releases import add_software


async def _report(port: int, reports: list[tuple[str, str]]) -> None:
    async with grpclib_stub(port) as stub:
        batch = DeviceStatusBatch(
            statuses=[DeviceStatus(serial=s, software_version=v) for s, v in reports]
        )
        ack = await aio(stub.send_status_batch, batch)
    assert ack.accepted == len(reports)


async def _walk(api, params: dict[str, object], *, between=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Every serial of a listing, following nextCursor; `between` runs after each page."""
    serials: list[str] = []
    cursor = None
    while True:
        response = await api.get(
            "/sensors", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        serials += [item["serial"] for item in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            return serials
        if between is not None:
            await between()


async def test_cursor_pages_cover_every_sensor_once_while_sensors_change_state(running, api, db):
    await seed.seed(db, 230)
    await add_software(db, "1.0.0")
    everyone = [seed.serial_for(n) for n in range(1, 231)]
    rng = random.Random(4)

    async def churn() -> None:
        # Some sensors come online (with a version), some go offline, between pages.
        await _report(running.grpc_port, [(s, "v1.0.0") for s in rng.sample(everyone, 25)])
        await db.execute(
            "UPDATE sensor SET online = false WHERE serial = ANY($1::text[]) AND online",
            rng.sample(everyone, 25),
        )

    with trio.fail_after(30):
        walked = await _walk(api, {"limit": 17}, between=churn)
    assert walked == sorted(everyone)


async def test_page_numbers_cover_every_sensor_once_while_sensors_change_state(running, api, db):
    await seed.seed(db, 95)
    everyone = [seed.serial_for(n) for n in range(1, 96)]
    walked: list[str] = []
    with trio.fail_after(30):
        for page in range(1, 11):
            response = await api.get("/sensors", params={"page": page, "limit": 10})
            body = response.json()
            assert body["page"] == page
            assert body["total"] == 95
            walked += [item["serial"] for item in body["items"]]
            await _report(running.grpc_port, [(everyone[-page], "")])
    assert walked == everyone


async def _page_serials(api, page: int, **params: object) -> tuple[list[str], bool]:  # type: ignore[no-untyped-def]
    response = await api.get("/sensors", params={"page": page, "limit": 100, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    return [item["serial"] for item in body["items"]], body["nextCursor"] is not None


async def test_deep_page_numbers_are_exact_as_the_fleet_grows_and_shrinks(api, db):
    """Deep pages start from page anchors; anchors go stale when sensors are provisioned or
    removed and must be rebuilt, never used stale."""
    everyone = sorted(seed.serial_for(n) for n in range(1, 3501))
    await seed.seed(db, 3500)
    await db.execute("INSERT INTO sensor (serial) VALUES ('A-first'), ('ZZ-last'), ('DS-0000')")
    everyone = sorted([*everyone, "A-first", "ZZ-last", "DS-0000"])

    async def check() -> None:
        pages = -(-len(everyone) // 100)
        for page in (1, 10, 11, 21, pages - 1, pages, pages + 1):
            items, more = await _page_serials(api, page)
            assert items == everyone[(page - 1) * 100 : page * 100], page
            assert more == (page * 100 < len(everyone))

    with trio.fail_after(60):
        await check()
        await seed.seed(db, 4200)  # provisioning shifts every page after DS-00003500
        everyone = sorted([*everyone, *(seed.serial_for(n) for n in range(3501, 4201))])
        await check()
        await db.execute("DELETE FROM sensor WHERE serial = ANY($1::text[])", everyone[5:705])
        everyone = everyone[:5] + everyone[705:]
        await check()
        # One out, one in, in one statement each, leaving the fleet's size and highest id as
        # they were (the new row takes the removed one's id): the anchors must still go stale.
        gone = everyone[2500]
        reused = await db.fetchval("DELETE FROM sensor WHERE serial = $1 RETURNING id", gone)
        await db.execute(
            "INSERT INTO sensor (id, serial) OVERRIDING SYSTEM VALUE VALUES ($1, 'A-second')",
            reused,
        )
        everyone = sorted([*everyone[:2500], *everyone[2501:], "A-second"])
        await check()


async def test_page_anchors_are_rebuilt_in_the_background_not_by_a_request(api, db):
    """Provisioning makes the anchors stale; the daemon's anchor task rebuilds them with no
    request asking, and a deep page asked meanwhile is exact (it skips rows instead)."""
    _FRESH = (
        "SELECT coalesce((SELECT set_version FROM sensor_anchor_basis) = "
        "(SELECT n FROM sensor_set_version), false)"
    )
    await seed.seed(db, 2500)
    everyone = sorted(seed.serial_for(n) for n in range(1, 2501))
    with trio.fail_after(30):
        # The rebuild's lock held: nothing can rebuild, the request must still answer, exactly.
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", 0x616E63686F72)
            items, _ = await _page_serials(api, 21)
            assert items == everyone[2000:2100]
            assert not await db.fetchval(_FRESH)

        async def fresh() -> bool:
            return bool(await db.fetchval(_FRESH))

        await eventually(fresh)
        assert await db.fetchval("SELECT count(*) FROM sensor_anchor") == 3
        items, _ = await _page_serials(api, 21)
    assert items == everyone[2000:2100]


async def test_last_pages_of_a_filtered_listing_are_exact(api, db):
    """The far half of a filtered listing is read backwards from its exact total."""
    await seed.seed(db, 2500)
    online = [seed.serial_for(n) for n in range(1, 2501) if n % 3]
    await db.execute(
        "UPDATE sensor SET online = true, last_seen_at = now(), status_changed_at = now() "
        "WHERE serial = ANY($1::text[])",
        online,
    )
    pages = -(-len(online) // 100)
    with trio.fail_after(30):
        for page in (1, pages // 2 + 1, pages - 1, pages, pages + 1):
            items, more = await _page_serials(api, page, status="online")
            assert items == online[(page - 1) * 100 : page * 100], page
            assert more == (page * 100 < len(online))


async def test_items_have_the_documented_shape(running, api, db, sensors):
    await add_software(db, "1.2.3")
    with trio.fail_after(10):
        await _report(running.grpc_port, [(sensors[0], "v1.2.3")])
        body = (await api.get("/sensors", params={"limit": 2})).json()
    first, second = body["items"]
    assert first["serial"] == sensors[0]
    assert first["version"] == "v1.2.3"
    assert first["status"] == "online"
    assert first["online"] is True
    assert first["lastSeenAt"] is not None
    assert first["statusChangedAt"] is not None
    assert set(first) == {
        "id",
        "serial",
        "version",
        "status",
        "online",
        "lastSeenAt",
        "statusChangedAt",
        "site",
        "label",
        "reportedVersion",
    }
    assert first["reportedVersion"] is None
    assert second["status"] == "never"
    assert second["version"] is None
    assert second["lastSeenAt"] is None
    assert body["page"] == 1
    assert body["limit"] == 2
    assert body["total"] == 10
    assert body["totalExact"] is True
    assert body["nextCursor"] is not None


async def test_filters_by_status_version_and_prefix_with_matching_totals(running, api, db):
    await seed.seed(db, 40)
    await add_software(db, "1.0.0", "2.0.0-rc.1")
    s = seed.serial_for
    with trio.fail_after(20):
        await _report(running.grpc_port, [(s(n), "1.0.0") for n in range(1, 11)])
        await _report(running.grpc_port, [(s(n), "v2.0.0-rc.1") for n in range(11, 16)])
        await db.execute(
            "UPDATE sensor SET online = false WHERE serial = ANY($1::text[])",
            [s(n) for n in (1, 2, 11)],
        )

        async def listing(**params: object) -> tuple[list[str], int]:
            body = (await api.get("/sensors", params={"limit": 500, **params})).json()
            assert body["totalExact"] is True
            return [item["serial"] for item in body["items"]], body["total"]

        assert await listing(status="online") == (
            [s(n) for n in range(3, 11)] + [s(12), s(13), s(14), s(15)],
            12,
        )
        assert await listing(status="offline") == ([s(1), s(2), s(11)], 3)
        assert await listing(status="never") == ([s(n) for n in range(16, 41)], 25)
        assert await listing(version="v1.0.0") == ([s(n) for n in range(1, 11)], 10)
        assert await listing(version="2.0.0-rc.1", status="offline") == ([s(11)], 1)
        assert await listing(q="DS-0000003") == ([s(n) for n in range(30, 40)], 10)
        assert await listing(q="DS-0000001", status="online") == (
            [s(10), s(12), s(13), s(14), s(15)],
            5,
        )
        assert await listing(q="XX") == ([], 0)
        # Empty means any, as a form's empty field sends it.
        assert await listing(status="", site="", version="") == ([s(n) for n in range(1, 41)], 40)


async def test_prefix_total_is_capped_and_flagged_inexact(running, api, db):
    await seed.seed(db, 10_050)
    with trio.fail_after(20):
        body = (await api.get("/sensors", params={"q": "DS-", "limit": 5})).json()
    assert body["total"] == 10_000
    assert body["totalExact"] is False
    assert len(body["items"]) == 5


async def test_limit_is_capped(running, api, db):
    await seed.seed(db, 510)
    with trio.fail_after(10):
        body = (await api.get("/sensors", params={"limit": 10_000})).json()
    assert body["limit"] == 500
    assert len(body["items"]) == 500
    assert body["nextCursor"] is not None


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"page": "0"}, "invalid_parameter"),
        ({"page": "two"}, "invalid_parameter"),
        ({"page": "1000001"}, "invalid_parameter"),
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "1.5"}, "invalid_parameter"),
        ({"status": "sleeping"}, "invalid_parameter"),
        ({"version": "1.2"}, "invalid_version"),
        ({"cursor": "not a cursor!"}, "invalid_cursor"),
        ({"cursor": "AA"}, "invalid_cursor"),
        # Nested past what Python's json recursed into (RecursionError was a 500).
        ({"cursor": base64.urlsafe_b64encode(b"[" * 2000).decode()}, "invalid_cursor"),
        # Edited keys that reached PostgreSQL's cast (a 500).
        (
            {"sort": "last_seen_at", "cursor": _cursor(["last_seen_at", False, "x", "DS-1"])},
            "invalid_cursor",
        ),
        (
            {"sort": "version", "cursor": _cursor(["version", False, "a\u0000", "DS-1"])},
            "invalid_cursor",
        ),
        (  # Python reads this offset, PostgreSQL refuses it (±15:59 at most)
            {
                "sort": "status_changed_at",
                "cursor": _cursor(["status_changed_at", True, "2024-01-01T00:00+20:00", "DS-1"]),
            },
            "invalid_cursor",
        ),
        ({"q": "DS-\x00"}, "invalid_parameter"),  # PostgreSQL refuses a NUL in text
        ({"q": "DS-\u2028"}, "invalid_parameter"),
        ({"sort": "color"}, "invalid_parameter"),
        ({"order": "up"}, "invalid_parameter"),
        ({"q": "x" * 129}, "invalid_parameter"),
        ({"site": "north\x00"}, "invalid_parameter"),
        ({"site": "north\nyard"}, "invalid_parameter"),
    ],
)
async def test_bad_parameters_are_400(api, params, code):
    with trio.fail_after(10):
        response = await api.get("/sensors", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "OFFLINE"}, "status must be one of never, online, offline, retired"),
        (
            {"sort": "colour"},
            "sort must be one of serial, status_changed_at, last_seen_at, version",
        ),
        ({"limit": "1.5"}, "limit must be an integer"),
        ({"page": "0", "limit": "x"}, "page must be at least 1; limit must be an integer"),
        ({"page": "1000001"}, "page must be at most 1,000,000"),
        ({"q": "x" * 129}, "q must be at most 128 characters"),
    ],
)
async def test_bad_parameters_are_explained_in_the_api_words(api, params, message):
    with trio.fail_after(10):
        response = await api.get("/sensors", params=params)
    assert response.json()["error"] == {"code": "invalid_parameter", "message": message}


async def test_cursor_and_page_together_are_refused(api, db):
    await seed.seed(db, 3)
    with trio.fail_after(10):
        first = (await api.get("/sensors", params={"limit": 1})).json()
        both = await api.get("/sensors", params={"cursor": first["nextCursor"], "page": 2})
    assert both.status_code == 400
    assert both.json()["error"]["code"] == "invalid_parameter"
    assert "cursor or page, not both" in both.json()["error"]["message"]


async def test_sensor_detail_has_recent_events_newest_first(running, api, db, sensors):
    await add_software(db, "1.2.3")
    with trio.fail_after(10):
        await _report(running.grpc_port, [(sensors[0], "1.2.3")])
        await db.execute(
            "INSERT INTO sensor_event (sensor_id, at, kind, old, new) "
            "SELECT id, now() + interval '1 second', 'offline', 'online', 'offline' "
            "FROM sensor WHERE serial = $1",
            sensors[0],
        )
        response = await api.get(f"/sensors/{sensors[0]}")
    body = response.json()
    assert response.status_code == 200
    assert body["serial"] == sensors[0]
    assert body["version"] == "v1.2.3"
    kinds = [(e["kind"], e["old"], e["new"]) for e in body["events"]]
    assert kinds[0] == ("offline", "online", "offline")
    assert sorted(kinds[1:]) == [("online", "never", "online"), ("version", None, "v1.2.3")]


async def test_unknown_sensor_is_404(api, sensors):
    with trio.fail_after(10):
        for path in ("/sensors/DS-99999999", "/sensors/a/b", "/sensors/%00"):
            response = await api.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "sensor_not_found"


@pytest.mark.parametrize(
    "value",
    [
        ["2026-01-01T00:00:00+00:00", 10**30],  # past bigint: asyncpg refused to encode it
        ["0001-01-01T00:00:00+05:00", 1],  # before year 1 in UTC
        ["2026-01-01T00:00:00", 1],  # no offset: no instant
    ],
)
async def test_an_edited_events_cursor_is_400(api, sensors, value):
    with trio.fail_after(10):
        response = await api.get(f"/sensors/{sensors[0]}/events", params={"cursor": _cursor(value)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"
