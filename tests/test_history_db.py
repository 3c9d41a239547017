"""Fleet history on PostgreSQL: the sample statement (one row per minute whoever samples),
pruning, buckets, and `GET /summary/history` on a running daemon, whose sampler writes the
current minute as it starts. The sampler's timing is in test_history.py, on MockClock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import trio

from droneshield.db import history, seed
from droneshield.db.pool import connect

from .support.processes import eventually
from .support.releases import add_software

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


async def _insert(db, at: datetime, online: int, offline: int = 0, never: int = 0, **versions):  # type: ignore[no-untyped-def]
    await db.execute(
        "INSERT INTO fleet_history (minute, online, offline, never, versions, sites) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)",
        at,
        online,
        offline,
        never,
        json.dumps(versions),
        json.dumps({"north": [online // 2, offline, 0], "": [online - online // 2, 0, never]}),
    )


async def test_a_sample_writes_the_maintained_totals_once_per_minute(db, database_url, sensors):
    await add_software(db, "1.0.0", "2.0.0")
    await db.execute(
        "UPDATE sensor SET online = true, last_seen_at = now(), status_changed_at = now(), "
        "version = CASE WHEN serial < 'DS-00000003' THEN '1.0.0' ELSE '2.0.0' END, "
        "version_key = (SELECT version_key FROM software WHERE version = "
        "CASE WHEN serial < 'DS-00000003' THEN '1.0.0' ELSE '2.0.0' END) "
        "WHERE serial <= 'DS-00000004'"
    )
    await db.execute("UPDATE sensor SET online = false WHERE serial = 'DS-00000004'")
    await db.execute("UPDATE sensor SET site = 'north' WHERE serial >= 'DS-00000003'")
    with trio.fail_after(10):
        async with connect(database_url) as other:
            # Two daemons sampling the same minute at once: one row.
            first, second = await history.sample(db), await history.sample(other)
        row = await db.fetchrow("SELECT * FROM fleet_history")
        minute = await db.fetchval("SELECT date_bin('1 minute', now(), 'epoch'::timestamptz)")
    written, until_next = first
    assert written
    assert not second[0]
    assert 0 < until_next <= 60
    assert row["minute"] == minute
    assert (row["online"], row["offline"], row["never"]) == (3, 1, 6)
    assert json.loads(row["versions"]) == {"1.0.0": 2, "2.0.0": 2, "": 6}
    assert json.loads(row["sites"]) == {"north": [1, 1, 6], "": [2, 0, 0]}


async def test_pruning_deletes_only_old_samples_oldest_first_in_batches(db):
    now = await db.fetchval("SELECT date_bin('1 minute', now(), 'epoch'::timestamptz)")
    for minutes_ago in (5, 70, 80, 90):
        await _insert(db, now - timedelta(minutes=minutes_ago), online=minutes_ago)
    with trio.fail_after(10):
        assert await history.prune(db, 3600, 2) == 2
        left = await db.fetch("SELECT online FROM fleet_history ORDER BY minute")
        assert [r["online"] for r in left] == [70, 5]
        assert await history.prune(db, 3600, 2) == 1
        assert await history.prune(db, 3600, 2) == 0


async def test_each_bucket_answers_its_last_sample(db):
    for minute in range(12):  # 10:00 … 10:11, online = the minute
        await _insert(db, T0 + timedelta(minutes=minute), online=minute, never=1, **{"1.0.0": 1})
    with trio.fail_after(10):
        five = await history.samples(db, T0, T0 + timedelta(hours=1), timedelta(minutes=5))
        part = await history.samples(
            db, T0 + timedelta(minutes=3), T0 + timedelta(minutes=6), timedelta(minutes=1)
        )
        day = await history.samples(
            db, T0 - timedelta(days=2), T0 + timedelta(days=1), timedelta(days=1)
        )
    assert [(s.at.astimezone(UTC).minute, s.online) for s in five] == [(0, 4), (5, 9), (10, 11)]
    assert five[0].versions == {"1.0.0": 1}
    assert [s.online for s in part] == [3, 4, 5]  # `to` is exclusive
    assert [(s.at, s.online) for s in day] == [(datetime(2026, 11, 30, tzinfo=UTC), 11)]


async def test_history_route_answers_points_in_buckets(api, db, sensors):
    for minute in range(0, 180, 10):
        await _insert(
            db,
            T0 + timedelta(minutes=minute),
            online=minute,
            offline=1,
            never=2,
            **{"1.0.0": minute, "": 3},
        )
    with trio.fail_after(10):
        response = await api.get(
            "/summary/history",
            params={
                "from": "2026-11-30T10:00:00Z",
                "to": "2026-11-30T13:00:00+00:00",
                "step": "1h",
            },
        )
    assert response.status_code == 200
    body = response.json()
    assert body["step"] == "1h"
    assert body["from"].startswith("2026-11-30T10:00:00")
    assert [p["online"] for p in body["points"]] == [50, 110, 170]
    # Each point stands at its bucket's start and holds the bucket's last sample, minute 50.
    assert [(p["at"][11:16], p["sampledAt"][11:16]) for p in body["points"]] == [
        ("10:00", "10:50"),
        ("11:00", "11:50"),
        ("12:00", "12:50"),
    ]
    assert body["points"][0] == {
        "at": body["points"][0]["at"],
        "sampledAt": body["points"][0]["sampledAt"],
        "total": 53,
        "online": 50,
        "offline": 1,
        "never": 2,
        "versions": {"v1.0.0": 50, "none": 3},
    }


async def test_history_route_answers_one_sites_totals(api, db):
    for minute in range(0, 60, 10):
        await _insert(db, T0 + timedelta(minutes=minute), online=minute, offline=1, never=2)
    span = {"from": "2026-11-30T10:00:00Z", "to": "2026-11-30T11:00:00Z", "step": "5m"}
    with trio.fail_after(10):
        north = (await api.get("/summary/history", params={**span, "site": "north"})).json()
        unsited = (await api.get("/summary/history", params={**span, "site": ""})).json()
        elsewhere = (await api.get("/summary/history", params={**span, "site": "south"})).json()
    assert north["site"] == "north"
    assert [(p["online"], p["offline"], p["never"]) for p in north["points"]] == [
        (m // 2, 1, 0) for m in range(0, 60, 10)
    ]
    assert north["points"][0]["versions"] == {}
    assert [p["never"] for p in unsited["points"]] == [2] * 6
    assert [p["total"] for p in elsewhere["points"]] == [0] * 6


async def test_the_daemon_samples_the_current_minute_as_it_starts(db, api_with, settings):
    # Seeded before the daemon starts (fixtures are set up concurrently): its first sample,
    # taken as it starts, must see the ten sensors.
    await seed.seed(db, 10)
    api = await api_with(settings)

    async def sampled() -> bool:
        # The sampler starts with the daemon and samples right away, without holding up
        # readiness: the first answers may come before its row.
        return bool((await api.get("/summary/history")).json()["points"])

    with trio.fail_after(10):
        await eventually(sampled)
        body = (await api.get("/summary/history")).json()
    assert body["step"] == "1m"
    assert body["points"][-1]["never"] == 10  # sampled by the running daemon's sampler
    to = datetime.fromisoformat(body["to"])
    assert datetime.fromisoformat(body["from"]) == to - timedelta(days=1)


async def test_history_route_refuses_bad_ranges_and_steps_with_their_codes(api):
    cases = {
        "invalid_range": {"from": "2026-11-30T12:00:00Z", "to": "2026-11-30T11:00:00Z"},
        "too_many_points": {
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-11-30T00:00:00Z",
            "step": "1m",
        },
        "invalid_parameter": {"step": "2m"},
    }
    with trio.fail_after(10):
        for code, params in cases.items():
            response = await api.get("/summary/history", params=params)
            assert response.status_code == 400, (code, response.text)
            assert response.json()["error"]["code"] == code
        garbled = await api.get("/summary/history", params={"from": "yesterday"})
        unix = await api.get("/summary/history", params={"to": "0.5"})
    assert garbled.status_code == 400
    assert "from" in garbled.json()["error"]["message"]
    assert unix.status_code == 400  # ISO 8601 only, as documented, not a Unix time
    assert "ISO 8601" in unix.json()["error"]["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"site": "north\x00"},  # reached PostgreSQL, which refuses a NUL
        {"to": "0001-01-01T00:00:00"},  # a day before it overflowed
        {"from": "0001-01-01T00:00:00+05:00", "to": "0001-01-02T00:00:00Z"},
    ],
)
async def test_history_route_refuses_what_it_cannot_answer_with_a_json_400(api, params):
    with trio.fail_after(10):
        response = await api.get("/summary/history", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"invalid_parameter", "invalid_range"}
