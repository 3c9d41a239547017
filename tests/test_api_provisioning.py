"""Provisioning, changing and retiring sensors over real HTTP (and gRPC for their reports)."""

from __future__ import annotations

import json

import pytest
import trio
from grpclib import GRPCError, Status

from .support import sensor_table
from .support.grpc_clients import send, send_batch

CSV = {"Content-Type": "text/csv"}


async def _count(db) -> int:  # type: ignore[no-untyped-def]
    return int(await db.fetchval("SELECT count(*) FROM sensor"))


async def test_json_provisioning_is_idempotent(api, db):
    sensors = [
        {"serial": "0b5f3c9e-5c1a-4b7e-9d5e-000000000001", "site": "North gate", "label": "Mast"},
        {"serial": "ACME SN 42", "site": "North gate"},
        {"serial": "x"},
    ]
    with trio.fail_after(10):
        first = await api.post("/sensors", json={"sensors": sensors})
        again = await api.post("/sensors", json={"sensors": sensors})
        more = await api.post("/sensors", json={"sensors": [*sensors, {"serial": "y"}]})
        listing = (await api.get("/sensors", params={"site": "North gate"})).json()
    assert (first.status_code, first.json()) == (201, {"created": 3, "existing": 0})
    assert (again.status_code, again.json()) == (200, {"created": 0, "existing": 3})
    assert (more.status_code, more.json()) == (201, {"created": 1, "existing": 3})
    assert [(i["serial"], i["site"], i["label"]) for i in listing["items"]] == [
        ("0b5f3c9e-5c1a-4b7e-9d5e-000000000001", "North gate", "Mast"),
        ("ACME SN 42", "North gate", None),
    ]
    assert listing["total"] == 2


async def test_csv_provisioning_reads_optional_columns_in_any_order(api, db):
    body = "label,serial\nroof,AB-1\n,AB-2\n"
    with trio.fail_after(10):
        response = await api.post("/sensors", content=body.encode(), headers=CSV)
        items = (await api.get("/sensors")).json()["items"]
    assert (response.status_code, response.json()) == (201, {"created": 2, "existing": 0})
    assert [(i["serial"], i["site"], i["label"]) for i in items] == [
        ("AB-1", None, "roof"),
        ("AB-2", None, None),
    ]


def _csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "rows"),
    [
        pytest.param(
            _csv(["serial,site", "OK-1,a", "bad\tserial,b", "OK-2,c,extra"]),
            CSV,
            422,
            "invalid_sensors",
            [(1, "invalid_serial"), (2, "invalid_row")],
            id="csv-broken-rows",
        ),
        pytest.param(
            b"serial\nOK-1\nOK-\xff\n", CSV, 400, "invalid_encoding", None, id="bad-encoding"
        ),
        pytest.param(b"name\nOK-1\n", CSV, 400, "invalid_csv", None, id="csv-bad-header"),
        pytest.param(
            b'"serial"x,site\nOK-1,a\n', CSV, 400, "invalid_csv", None, id="csv-stray-quote-header"
        ),
        pytest.param(
            b"serial,site\rMAC-1,x\rMAC-2,y\r", CSV, 400, "invalid_csv", None, id="csv-cr-lines"
        ),
        pytest.param(
            b'serial,site,label\n"OK\n1",north,"a\nb"\nOK-2,,"c\rd"\n',
            CSV,
            422,
            "invalid_sensors",
            [(0, "invalid_serial"), (1, "invalid_field")],
            id="csv-quoted-line-breaks-are-kept",
        ),
        pytest.param(
            "serial,site,label\nOK-1,north,a\u2028b\nOK-2,,bad\x1clabel\nOK-3,,c\x85d\n".encode(),
            CSV,
            422,
            "invalid_sensors",
            [(0, "invalid_field"), (1, "invalid_field"), (2, "invalid_field")],
            id="csv-rows-end-only-at-line-ends",
        ),
        pytest.param(
            b"[" * 100_000,
            {"Content-Type": "application/json"},
            400,
            "invalid_json",
            None,
            id="json-nested-too-deep",
        ),
        pytest.param(
            json.dumps({"sensors": [{"serial": "D-1"}, {"serial": "D-2"}, {"serial": "D-1"}]}),
            {"Content-Type": "application/json"},
            422,
            "invalid_sensors",
            [(2, "duplicate_serial")],
            id="duplicate-serial",
        ),
        pytest.param(
            _csv(["serial", *(f"N-{n}" for n in range(10_001))]),
            CSV,
            413,
            "too_many_sensors",
            None,
            id="10001-sensors",
        ),
        pytest.param(
            json.dumps({"sensors": [{"serial": "J-1", "site": 5}, "J-2", {"serial": ""}]}),
            {"Content-Type": "application/json"},
            422,
            "invalid_sensors",
            [(0, "invalid_field"), (1, "invalid_row"), (2, "invalid_serial")],
            id="json-bad-rows",
        ),
        pytest.param(
            _csv(["serial", ".", "..", "...", "./."]),
            CSV,
            422,
            "invalid_sensors",
            [(0, "invalid_serial"), (1, "invalid_serial")],
            id="csv-dot-segments",
        ),
        pytest.param(
            json.dumps({"sensors": [{"serial": ".."}, {"serial": ".x"}]}),
            {"Content-Type": "application/json"},
            422,
            "invalid_sensors",
            [(0, "invalid_serial")],
            id="json-dot-segment",
        ),
        pytest.param(b"{", {"Content-Type": "application/json"}, 400, "invalid_json", None),
        pytest.param(b"serial\nA\n", {"Content-Type": "text/plain"}, 415, None, None),
    ],
)
async def test_bad_input_is_a_clear_4xx_and_stores_nothing(
    api, db, body, headers, status, code, rows
):
    with trio.fail_after(20):
        response = await api.post("/sensors", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if rows is not None:
        assert [(r["index"], r["code"]) for r in error["rows"]] == rows
        assert all(r["message"] for r in error["rows"])
    assert await _count(db) == 0


async def test_limits_are_told_in_the_units_people_read(running, api, db):
    """The code other routes give a body too large (test_http_reports streams one to the same
    reader); sizes in MiB and counts with thousands separators."""
    with trio.fail_after(20):
        many = _csv(["serial", *map(str, range(10_001))])
        too_many = await api.post("/sensors", content=many, headers=CSV)
        # Announced, and refused before it is sent (httpx would send it all the same).
        async with await trio.open_tcp_stream("127.0.0.1", running.http_port) as stream:
            await stream.send_all(
                b"POST /sensors HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                b"Content-Length: %d\r\n\r\n" % (9 << 20)
            )
            answer = b""
            while data := await stream.receive_some():
                answer += data
    message = too_many.json()["error"]["message"]
    assert message.startswith("10,001 sensors in one request; at most 10,000")
    assert answer.startswith(b"HTTP/1.1 413")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == {
        "code": "request_too_large",
        "message": "the body exceeds 8 MiB",
    }
    assert await _count(db) == 0


async def test_csv_from_a_spreadsheet_with_a_byte_order_mark_and_blank_lines(api, db):
    """Excel's "CSV UTF-8" starts with a byte order mark; files often end in blank lines (and
    some start with them); people type spaces around commas."""
    body = "\ufeff\r\nSerial,Site\r\nXL-1 , north\r\n\r\nXL-2,south\r\n\r\n".encode()
    with trio.fail_after(10):
        response = await api.post("/sensors", content=body, headers=CSV)
    assert (response.status_code, response.json()) == (201, {"created": 2, "existing": 0})
    stored = await db.fetch("SELECT serial, site FROM sensor ORDER BY serial")
    assert [tuple(r) for r in stored] == [("XL-1", "north"), ("XL-2", "south")]


async def test_csv_row_errors_name_the_line_in_the_file(api, db):
    """A spreadsheet's row is found by its line: blank lines, empty rows (`,,`) and a quoted
    field holding a newline all move rows down the file without being rows themselves."""
    body = (
        b"serial,site,label\n"  # 1
        b"LN-1,north,\n"  # 2: row 0
        b"\n"  # 3
        b",,\n"  # 4
        b'LN-2,south,"two\nlines"\n'  # 5-6: row 1
        b"LN-\x013,east,\n"  # 7: row 2
        b"LN-4,west\n"  # 8: row 3, a field short
        b"LN-1,north,\n"  # 9: row 4, again
    )
    with trio.fail_after(10):
        response = await api.post("/sensors", content=body, headers=CSV)
        await api.post("/sensors", json={"sensors": [{"serial": "LN-9", "site": "north"}]})
        conflict = await api.post(
            "/sensors", content=b"serial,site\n\nLN-8,x\nLN-9,south\n", headers=CSV
        )
    assert response.status_code == 422
    rows = response.json()["error"]["rows"]
    assert [(r["index"], r["line"], r["code"]) for r in rows] == [
        (1, 5, "invalid_field"),  # a label holds no newline; the row starts on line 5
        (2, 7, "invalid_serial"),
        (3, 8, "invalid_row"),
        (4, 9, "duplicate_serial"),
    ]
    assert rows[2]["message"] == "2 fields, the header has 3"
    assert rows[3]["message"] == "serial 'LN-1' is already given in line 2"
    assert conflict.status_code == 409
    assert [(r["index"], r["line"]) for r in conflict.json()["error"]["rows"]] == [(1, 4)]
    # A JSON body has no lines: its rows are named by index.
    with trio.fail_after(10):
        twice = await api.post("/sensors", json={"sensors": [{"serial": "J-1"}, {"serial": "J-1"}]})
    [row] = twice.json()["error"]["rows"]
    assert "line" not in row
    assert row["message"] == "serial 'J-1' is already given in row 0"


async def test_a_patch_nested_too_deep_is_a_json_400(api, db):
    with trio.fail_after(10):
        await api.post("/sensors", json={"sensors": [{"serial": "P-1"}]})
        response = await api.patch("/sensors/P-1", content=b"[" * 100_000)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_a_refusal_counts_every_repeated_serial_and_lists_the_first_hundred(api, db):
    body = _csv(["serial", *(["DUP-1"] * 10_000)])
    with trio.fail_after(20):
        response = await api.post("/sensors", content=body, headers=CSV)
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (422, "invalid_sensors")
    assert error["message"].startswith("9,999 of 10,000 rows are invalid")
    assert [r["index"] for r in error["rows"]] == list(range(1, 101))
    assert await _count(db) == 0


async def test_page_anchors_go_stale_only_when_the_set_of_sensors_changes(api, db):
    """An idempotent provisioning call or a second retirement changes no sensor, so the page
    anchors (a ~1 s rebuild at a million sensors) stay fresh; a new, retired or restored
    sensor makes them stale."""

    async def basis() -> int:
        return int(await db.fetchval("SELECT n FROM sensor_set_version"))

    sensors = {"sensors": [{"serial": "A-1"}, {"serial": "A-2"}]}
    with trio.fail_after(10):
        steps = [
            ("new", api.post("/sensors", json=sensors)),
            ("same again", api.post("/sensors", json=sensors)),
            ("retired", api.delete("/sensors/A-1")),
            ("retired again", api.delete("/sensors/A-1")),
            ("restored", api.post("/sensors", json=sensors)),
        ]
        changed = []
        for name, call in steps:
            before = await basis()
            assert (await call).status_code < 300, name
            if await basis() != before:
                changed.append(name)
    assert changed == ["new", "retired", "restored"]


async def test_a_truncated_fleet_counts_nothing(api, db):
    """An operator emptying the table by hand (TRUNCATE): the maintained totals follow."""
    with trio.fail_after(10):
        await api.post("/sensors", json={"sensors": [{"serial": "T-1", "site": "a"}]})
        await api.post("/sensors", json={"sensors": [{"serial": "T-2"}]})
        await api.delete("/sensors/T-2")
        before = await db.fetchval("SELECT n FROM sensor_set_version")
        await db.execute("TRUNCATE sensor CASCADE")
        summary = (await api.get("/summary")).json()
    await sensor_table.assert_counters_exact(db)
    assert summary["total"] == 0
    assert await db.fetchval("SELECT n FROM sensor_set_version") != before


async def test_a_sensor_stored_otherwise_is_a_conflict_and_nothing_is_stored(api, db):
    with trio.fail_after(10):
        await api.post("/sensors", json={"sensors": [{"serial": "C-1", "site": "a"}]})
        response = await api.post(
            "/sensors", json={"sensors": [{"serial": "C-2"}, {"serial": "C-1", "site": "b"}]}
        )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "sensors_conflict"
    assert [(r["index"], r["code"]) for r in error["rows"]] == [(1, "sensor_exists")]
    assert await _count(db) == 1


async def test_patch_changes_site_and_label_and_site_totals_follow(api, db):
    with trio.fail_after(10):
        await api.post("/sensors", json={"sensors": [{"serial": "P-1", "site": "a"}]})
        changed = await api.patch("/sensors/P-1", json={"site": "b", "label": "new"})
        cleared = await api.patch("/sensors/P-1", json={"label": None})
        sites = (await api.get("/sites")).json()["items"]
        missing = await api.patch("/sensors/P-404", json={"site": "b"})
        bad = await api.patch("/sensors/P-1", json={"colour": "red"})
    assert changed.status_code == 200
    assert (changed.json()["site"], changed.json()["label"]) == ("b", "new")
    assert (cleared.json()["site"], cleared.json()["label"]) == ("b", None)
    assert sites == [
        {"site": "b", "total": 1, "online": 0, "offline": 0, "never": 1, "covered": False}
    ]
    assert missing.status_code == 404
    assert bad.status_code == 400


async def test_retired_sensor_leaves_listings_and_totals_and_comes_back_with_history(
    running, api, db
):
    with trio.fail_after(20):
        await api.post(
            "/sensors", json={"sensors": [{"serial": "R-1", "site": "s"}, {"serial": "R-2"}]}
        )
        await send(running.grpc_port, "R-1", "v1.0.0")
        assert (await api.delete("/sensors/R-1")).status_code == 204
        assert (await api.delete("/sensors/R-1")).status_code == 204  # already retired
        assert (await api.delete("/sensors/R-404")).status_code == 404
        listed = (await api.get("/sensors")).json()
        retired = (await api.get("/sensors", params={"status": "retired"})).json()
        summary = (await api.get("/summary")).json()
        sites = (await api.get("/sites")).json()["items"]
        with pytest.raises(GRPCError) as refused:
            await send(running.grpc_port, "R-1", "v1.0.0")
        batch = await send_batch(running.grpc_port, [("R-1", "v1.0.0"), ("R-2", "v1.0.0")])
        detail = (await api.get("/sensors/R-1")).json()
        back = await api.post("/sensors", json={"sensors": [{"serial": "R-1", "site": "s"}]})
        after = (await api.get("/sensors/R-1")).json()
    assert [i["serial"] for i in listed["items"]] == ["R-2"]
    assert listed["total"] == 1
    assert [i["serial"] for i in retired["items"]] == ["R-1"]
    assert (summary["total"], summary["online"]) == (1, 0)
    assert [s["site"] for s in sites] == [None]
    assert refused.value.status is Status.NOT_FOUND
    assert "retired" in (refused.value.message or "")
    assert batch.accepted == 1
    assert [(r.index, r.code) for r in batch.rejected] == [
        (0, "NOT_FOUND"),
        (1, "VERSION_NOT_STORED"),
    ]
    assert detail["retired"] is True
    assert (back.status_code, back.json()) == (201, {"created": 1, "existing": 0})
    assert after["retired"] is False
    # Online when retired: it went offline then (availability counts it so), with no alert.
    assert [e["kind"] for e in after["events"]] == ["restored", "retired", "offline", "online"]
    offline = after["events"][2]
    assert (offline["old"], offline["new"]) == ("online", "offline")
    assert offline["at"] == after["events"][1]["at"] == after["statusChangedAt"]
    assert after["status"] == "offline"
