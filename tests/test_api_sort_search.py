"""Sorting, searching and a sensor's own history over real HTTP, against orders computed here."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
import trio

from droneshield import domain
from droneshield.availability import availability
from droneshield.db import seed
from droneshield.db.sensors import (
    EventRow,
    GramStats,
    SensorFilter,
    gram_stats,
    narrowing_grams,
    trigrams,
)

from .support.grpc_clients import send_batch
from .support.releases import add_software


async def _walk(api, params: dict[str, object]) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        response = await api.get(
            "/sensors", params={"limit": 3, **params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items


@pytest.fixture
async def fleet(running, api, db):  # type: ignore[no-untyped-def]
    """12 sensors: online on several versions, offline at several times, never seen."""
    serials = [f"F-{n:02d}" for n in range(12)]
    await api.post(
        "/sensors",
        json={"sensors": [{"serial": s, "label": f"Label {s.lower()}"} for s in serials]},
    )
    await add_software(db, "1.2.0", "1.10.0", "2.0.0-rc.1", "2.0.0")
    versions = ["1.10.0", "1.2.0", "2.0.0", "2.0.0-rc.1", "1.2.0", "1.10.0", "2.0.0", "1.2.0"]
    await send_batch(running.grpc_port, list(zip(serials[:8], versions, strict=True)))
    # Every other one at site north.
    await db.execute(
        "UPDATE sensor SET site = 'north' WHERE right(serial, 1) IN ('0', '2', '4', '6', '8')"
    )
    # Four go silent at distinct times (last seen and status change both set by hand).
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n, serial in enumerate(serials[4:8]):
        await db.execute(
            "UPDATE sensor SET online = false, last_seen_at = $2, status_changed_at = $3 "
            "WHERE serial = $1",
            serial,
            base + timedelta(hours=7 - n * 2),
            base + timedelta(hours=n),
        )
    return serials


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", ["serial", "status_changed_at", "last_seen_at", "version"])
@pytest.mark.parametrize(
    "where",
    [
        {},
        {"status": "online"},
        {"status": "offline"},
        {"status": "never"},
        {"version": "1.2.0"},
        {"site": "north"},
        {"site": "north", "status": "offline"},
    ],
    ids=repr,
)
async def test_every_sort_pages_in_its_order_with_cursors(api, db, fleet, sort, order, where):
    with trio.fail_after(20):
        walked = await _walk(api, {"sort": sort, "order": order, **where})
        expected = await db.fetch(
            "SELECT serial FROM sensor WHERE ($1::text IS NULL OR sensor_status(online, "
            "last_seen_at) = $1) AND ($2::text IS NULL OR version = $2) "
            "AND ($3::text IS NULL OR site = $3) ORDER BY "
            + {
                "serial": "serial",
                "status_changed_at": "coalesce(status_changed_at, '-infinity')",
                "last_seen_at": "CASE WHEN online THEN 'infinity' "
                "ELSE coalesce(last_seen_at, '-infinity') END",
                "version": "coalesce(version_sort_key(version), '')",
            }[sort]
            + (" DESC, serial DESC" if order == "desc" else ", serial"),
            where.get("status"),
            where.get("version"),
            where.get("site"),
        )
    assert [i["serial"] for i in walked] == [r["serial"] for r in expected]


async def test_version_sort_follows_semver_precedence(api, fleet):
    with trio.fail_after(10):
        walked = await _walk(api, {"sort": "version", "status": "online"})
    assert [i["version"] for i in walked] == ["v1.2.0", "v1.10.0", "v2.0.0-rc.1", "v2.0.0"]


async def test_last_seen_sort_puts_online_first_then_the_most_recently_silent(api, fleet):
    with trio.fail_after(10):
        walked = await _walk(api, {"sort": "last_seen_at", "order": "desc"})
    assert [i["status"] for i in walked[:4]] == ["online"] * 4
    assert [i["serial"] for i in walked[4:8]] == ["F-04", "F-05", "F-06", "F-07"]
    assert {i["status"] for i in walked[8:]} == {"never"}


async def test_cursor_of_another_sort_is_refused(api, fleet):
    with trio.fail_after(10):
        first = (await api.get("/sensors", params={"limit": 2, "sort": "version"})).json()
        response = await api.get("/sensors", params={"cursor": first["nextCursor"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("f-0", [f"F-0{n}" for n in range(10)]),
        ("1", ["F-01", "F-10", "F-11"]),
        ("LABEL F-11", ["F-11"]),
        ("%", []),
        ("_", []),
        ("nothing", []),
    ],
)
async def test_q_matches_anywhere_in_serial_or_label_whatever_the_case(api, fleet, q, expected):
    with trio.fail_after(10):
        body = (await api.get("/sensors", params={"q": q, "limit": 50})).json()
    assert [i["serial"] for i in body["items"]] == expected
    assert (body["total"], body["totalExact"]) == (len(expected), True)


async def test_q_matches_labels_of_any_text_ascii_letters_in_any_case(api, db, fleet):
    """Labels may be any printable text; a search may be too. ASCII letters match in any case,
    others as typed (Python and PostgreSQL fold them differently; see domain.fold)."""
    labels = {"F-01": "Café Nord", "F-02": "Zürich Süd", "F-03": "東京 mast"}
    for serial, label in labels.items():
        await api.patch(f"/sensors/{serial}", json={"label": label})
    with trio.fail_after(10):
        found = {
            q: [i["serial"] for i in (await api.get("/sensors", params={"q": q})).json()["items"]]
            for q in ("CAFé", "café nord", "zürich", "süd", "東京", "京 MAST", "CAFÉ")
        }
    assert found == {
        "CAFé": ["F-01"],
        "café nord": ["F-01"],
        "zürich": ["F-02"],
        "süd": ["F-02"],
        "東京": ["F-03"],
        "京 MAST": ["F-03"],
        "CAFÉ": [],  # É is not é: only ASCII letters are folded
    }


async def test_fold_is_how_postgresql_lowers_under_the_c_collation(db):
    rng = random.Random(7)
    alphabet = "aZ09 -_%ÉéÜüßİıΣσ東京☃\u0130"
    texts = [_text(rng, alphabet, 20) for _ in range(500)]
    rows = await db.fetch(
        'SELECT lower(t COLLATE "C") AS low FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) '
        "ORDER BY n",
        texts,
    )
    assert [r["low"] for r in rows] == [domain.fold(t) for t in texts]


async def test_events_page_the_whole_history_newest_first(running, api, db, fleet):
    with trio.fail_after(20):
        await db.execute(
            "INSERT INTO sensor_event (sensor_id, at, kind, old, new) "
            "SELECT id, now() - make_interval(mins => n), 'offline', 'online', 'offline' "
            "FROM sensor, generate_series(1, 6) AS n WHERE serial = 'F-00'"
        )
        pages = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            body = (await api.get("/sensors/F-00/events", params=params)).json()
            pages.append(body["items"])
            cursor = body["nextCursor"]
            if cursor is None:
                break
        bad = await api.get("/sensors/F-00/events", params={"cursor": "xyz"})
        missing = await api.get("/sensors/NOPE/events")
    events = [e for page in pages for e in page]
    assert len(events) == 8  # online and version at the report, six offline
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    assert len({e["id"] for e in events}) == 8
    assert bad.status_code == 400
    assert missing.status_code == 404


async def test_detail_has_availability(api, db, fleet):
    with trio.fail_after(10):
        # Provisioned two hours ago, online for the last hour.
        await db.execute(
            "UPDATE sensor SET created_at = now() - interval '2 hours' WHERE serial = 'F-00'"
        )
        await db.execute(
            "UPDATE sensor_event SET at = now() - interval '1 hour' FROM sensor "
            "WHERE sensor.id = sensor_id AND serial = 'F-00' AND kind = 'online'"
        )
        online = (await api.get("/sensors/F-00")).json()
        never = (await api.get("/sensors/F-11")).json()
    assert online["availability"]["last24h"] == pytest.approx(0.5, abs=0.01)
    assert online["availability"]["last7d"] == pytest.approx(0.5, abs=0.01)
    assert never["availability"]["last7d"] == 0.0


def _event(at: datetime, old: str, new: str) -> EventRow:
    return EventRow(0, at, "online" if new == "online" else "offline", old, new)


def test_availability_counts_online_time_in_the_window_since_provisioning():
    now = datetime(2026, 1, 8, tzinfo=UTC)
    week = timedelta(days=7)
    events = [
        _event(now - timedelta(hours=30), "never", "online"),
        _event(now - timedelta(hours=12), "online", "offline"),
        _event(now - timedelta(hours=6), "offline", "online"),
    ]
    long_ago = now - timedelta(days=30)

    def share(window: timedelta, provisioned: datetime = long_ago) -> float | None:
        return availability(
            events, online_now=True, provisioned_at=provisioned, now=now, window=window
        )

    assert share(timedelta(days=1)) == pytest.approx(18 / 24)
    assert share(week) == pytest.approx(24 / (7 * 24))
    assert share(week, now - timedelta(hours=48)) == pytest.approx(24 / 48)
    assert share(week, now) is None
    assert availability([], online_now=True, provisioned_at=long_ago, now=now, window=week) == 1


async def test_a_search_can_use_the_trigram_index(db, sensors):
    conditions, args = SensorFilter(q="S-0%9").where(grams=trigrams("S-0%9"))
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = await db.fetch(
            f"EXPLAIN SELECT id FROM sensor WHERE {' AND '.join(conditions)}", *args
        )
    assert "sensor_search_grams" in "\n".join(r[0] for r in plan)
    assert trigrams("S-0%9") == ["-0%", "0%9", "s-0"]
    assert trigrams("CAFÉ Ü") == ["afÉ", "caf", "fÉ ", "É Ü"]  # ASCII letters folded, no other


def _text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choices(alphabet, k=rng.randint(0, longest)))


async def test_the_own_trigram_index_holds_exactly_the_trigrams_a_search_asks_for(db):
    """`sensor_grams` gives the lower-case trigrams of serial and label, sorted and each once
    (migration 0017), as `trigrams` makes them of a search: random printable ASCII, and a
    small alphabet in both cases for repeated trigrams."""
    rng = random.Random(16)
    printable = "".join(map(chr, range(0x20, 0x7F)))
    pairs = [
        (
            _text(rng, alphabet, 128),
            None if rng.random() < 0.2 else _text(rng, alphabet, 256),
        )
        for alphabet in (printable, "aA0-%_\\ ")
        for _ in range(1000)
    ]
    rows = await db.fetch(
        "SELECT sensor_grams(s, l) AS g FROM unnest($1::text[], $2::text[]) WITH ORDINALITY "
        "AS u(s, l, n) ORDER BY n",
        [s for s, _ in pairs],
        [label for _, label in pairs],
    )
    assert [r["g"] for r in rows] == [
        sorted(set(trigrams(s)) | set(trigrams(label or ""))) for s, label in pairs
    ]


async def test_the_search_index_folds_any_text_as_a_search_does(api, db):
    """In `sensor_search` (serial COLLATE "C"), `sensor_grams` lowers under "C": the trigrams a
    search asks for (`trigrams`, folded by `domain.fold`) are those of any text, non-ASCII
    included, whatever the database's own locale folds `É` or `I` into."""
    labels = ["ÉCOLE Nord", "Zürich SÜD", "東京 Mast", "DIYARBAKIR İl", None]
    serials = [f"X-{n}-DIYAR" for n in range(len(labels))]  # serials are ASCII
    pairs = list(zip(serials, labels, strict=True))
    sensors = [{"serial": s, **({"label": lb} if lb else {})} for s, lb in pairs]
    assert (await api.post("/sensors", json={"sensors": sensors})).status_code == 201
    rows = await db.fetch(
        "SELECT serial, label, sensor_grams(serial, label) AS g FROM sensor_search ORDER BY id"
    )
    assert [(r["serial"], r["label"]) for r in rows] == pairs
    assert [r["g"] for r in rows] == [
        sorted(set(trigrams(r["serial"])) | set(trigrams(r["label"] or ""))) for r in rows
    ]


async def test_the_own_trigrams_of_any_label_are_its_substrings(db):
    """Labels stored by other means than the API may hold any character: still every
    three-character substring of the lower-cased text, sorted as bytes, each once."""
    labels = ["Ünïcode ☃ Mast", "tab\there\x01", "ÀÉÎ" * 80, "ab", None]
    rows = await db.fetch(
        """
        SELECT sensor_grams('SER-1', l) = ARRAY(
            SELECT DISTINCT substr(t, i, 3) COLLATE "C"
            FROM unnest(ARRAY[lower('SER-1'), lower(l)]) AS t,
                generate_series(1, length(t) - 2) AS i
            ORDER BY 1
        ) AS same
        FROM unnest($1::text[]) AS l
        """,
        labels,
    )
    assert [r["same"] for r in rows] == [True] * len(labels)


async def test_the_own_trigram_index_is_asked_only_for_the_trigrams_that_narrow(db):
    await seed.seed(db, 30)
    # A fifth of the sensors labelled "north", another fifth "south".
    await db.execute(
        "UPDATE sensor SET label = CASE WHEN id <= 6 THEN 'north' ELSE 'south' END WHERE id <= 12"
    )
    unknown = narrowing_grams((await gram_stats(db)).shares, "ds-00000007")  # no statistics yet
    await db.execute("ANALYZE sensor_search")
    stats = await gram_stats(db)
    shares = stats.shares
    assert stats.rows == 30
    assert stats.candidates(["007"]) == pytest.approx(1)
    assert stats.candidates(["nor", "ort"]) == pytest.approx(30 * 0.2 * 0.2)
    rarest = min(stats.shares.values())
    assert stats.candidates(["zz9"]) == pytest.approx(30 * rarest / 2)  # in no sensor
    assert GramStats({}, 30).candidates(["007"]) == math.inf  # no statistics: no estimate
    assert unknown == ["-00"]  # all as rare as can be: the first alone
    # Every sensor holds ds-, s-0, -00 and 000 (common: left out); 007 one in thirty.
    assert narrowing_grams(shares, "ds-00000007") == ["007"]
    assert narrowing_grams(shares, "ds-") == []  # scanning finds a page at once
    assert narrowing_grams(shares, "zz9") == ["zz9"]
    assert narrowing_grams(shares, "ds") == []  # too short to have a trigram
    # Each trigram held by a fifth: one alone would leave too many rows, so two are asked.
    assert narrowing_grams(shares, "nort") == ["nor", "ort"]
    assert narrowing_grams(shares, "north") == ["nor", "ort"]  # at most two


_IDENTIFIERS = ["0", "1", "2", "10", "11", "9", "alpha", "alpha-1", "beta", "rc", "RC", "x-y", "a"]


def _semver(rng: random.Random) -> str:
    core = ".".join(str(rng.choice([0, 1, 2, 9, 10, 11])) for _ in range(3))
    if rng.random() < 0.2:
        return core
    return core + "-" + ".".join(rng.choices(_IDENTIFIERS, k=rng.randint(1, 3)))


async def test_the_version_key_orders_as_semver_precedence(db):
    """`version_sort_key` (migration 0019), compared as bytes, orders any versions as semver
    does: pre-release identifiers one by one, numbers as numbers and below text, a shorter
    list first (0007's key compared them as text: rc.10 before rc.2)."""
    rng = random.Random(19)
    versions = sorted({_semver(rng) for _ in range(400)})
    rows = await db.fetch(
        'SELECT v FROM unnest($1::text[]) AS v ORDER BY version_sort_key(v) COLLATE "C", v',
        versions,
    )
    keyed = [r["v"] for r in rows]
    assert keyed == sorted(versions, key=lambda v: (domain.sort_key(v), v))


async def test_sort_by_version_walks_numbered_pre_releases_in_order(running, api, db):
    await seed.seed(db, 3)
    await add_software(db, "2.0.0-rc.10", "2.0.0-rc.2", "2.0.0")
    sensors = [seed.serial_for(n) for n in (1, 2, 3)]
    with trio.fail_after(20):
        versions = ["2.0.0", "2.0.0-rc.10", "2.0.0-rc.2"]
        await send_batch(running.grpc_port, list(zip(sensors, versions, strict=True)))
        items = (await api.get("/sensors", params={"sort": "version"})).json()["items"]
    assert [i["version"] for i in items] == ["v2.0.0-rc.2", "v2.0.0-rc.10", "v2.0.0"]


@pytest.mark.parametrize("params", [{"q": "DS"}, {"status": "retired"}])
async def test_a_page_past_a_searchs_counted_matches_is_refused_toward_the_cursor(api, params):
    """Such a listing's total stops at the cap, so a page past it would read every match
    before it (page 1,000,000 of a search read the fleet, seconds a request)."""
    with trio.fail_after(10):
        last = await api.get("/sensors", params={**params, "page": 200, "limit": 50})
        past = await api.get("/sensors", params={**params, "page": 201, "limit": 50})
        deep = await api.get("/sensors", params={**params, "page": 1_000_000, "limit": 500})
    assert last.status_code == 200
    for refused in (past, deep):
        assert refused.status_code == 400
        assert "nextCursor" in refused.json()["error"]["message"]
