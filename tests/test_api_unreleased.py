"""Versions reported and never uploaded (an aggregate per version), and removing releases."""

from __future__ import annotations

import trio

from droneshield.db import seed
from droneshield.db.software import UNRELEASED_SHOWN

from .support.grpc_clients import send, send_batch
from .support.releases import MULTIPART, add_software, multipart, pdf


async def test_unreleased_versions_are_counted_shown_and_leave_once_uploaded(
    running, api, db, sensors
):
    with trio.fail_after(20):
        await send_batch(running.grpc_port, [(s, "v4.0.0") for s in sensors[:3]])
        await send(running.grpc_port, sensors[0], "4.0.0")
        await send(running.grpc_port, sensors[1], "v5.0.0-beta")
        listed = (await api.get("/software/unreleased")).json()["items"]
        summary = (await api.get("/summary")).json()
        metrics = (await api.get("/metrics")).text
        stored = await db.fetchval("SELECT count(*) FROM sensor WHERE version IS NOT NULL")
        await add_software(db, "4.0.0")
        after = (await api.get("/software/unreleased")).json()["items"]
    assert [(i["version"], i["reports"]) for i in listed] == [("v5.0.0-beta", 1), ("v4.0.0", 4)]
    assert listed[1]["firstSeenAt"] <= listed[1]["lastSeenAt"]
    assert [(u["version"], u["reports"]) for u in summary["unreleased"]] == [
        ("v5.0.0-beta", 1),
        ("v4.0.0", 4),
    ]
    assert 'droneshield_unreleased_version_reports{version="v4.0.0"} 4.0' in metrics
    assert stored == 0  # the rule stands: never uploaded, never stored on a sensor
    assert [i["version"] for i in after] == ["v5.0.0-beta"]


async def test_live_change_carries_the_reported_version_when_it_is_not_stored(running, sensors):
    seen = []
    running.writer.add_sink(lambda rows: seen.extend(r.state() for r in rows))
    with trio.fail_after(10):
        await send(running.grpc_port, sensors[0], "v4.0.0")
    assert [(s.serial, s.version, s.reported_version) for s in seen] == [
        (sensors[0], None, "4.0.0")
    ]


async def test_listings_and_a_sensors_page_show_the_reported_version_marked_not_stored(
    running, api, db, sensors
):
    await add_software(db, "1.2.3")
    a, b = sensors[:2]
    with trio.fail_after(20):
        await send_batch(running.grpc_port, [(a, "v1.2.3"), (b, "v1.2.3")])
        await send_batch(running.grpc_port, [(a, "v4.0.0"), (b, "not-a-version")])
        listed = (await api.get("/sensors", params={"limit": 2})).json()["items"]
        page = (await api.get(f"/sensors/{a}")).json()
        await send(running.grpc_port, a, "v1.2.3")  # back on a stored version
        again = (await api.get(f"/sensors/{a}")).json()
        await send(running.grpc_port, a, "v4.0.0")
        await api.delete(f"/sensors/{a}")
        retired = (await api.get(f"/sensors/{a}")).json()
    assert [(i["serial"], i["version"], i["reportedVersion"]) for i in listed] == [
        (a, "v1.2.3", "v4.0.0"),
        (b, "v1.2.3", None),  # a malformed version is no version
    ]
    assert (page["version"], page["reportedVersion"]) == ("v1.2.3", "v4.0.0")
    assert again["reportedVersion"] is None
    assert retired["reportedVersion"] is None


async def test_release_no_sensor_runs_is_deleted_with_its_file(running, api, db, settings, sensors):
    with trio.fail_after(20):
        body = multipart([(b"v1.0.0.pdf", pdf(100)), (b"v2.0.0.pdf", pdf(100, seed=1))])
        assert (
            await api.post("/upload", content=body, headers={"Content-Type": MULTIPART})
        ).status_code == 201
        await send(running.grpc_port, sensors[0], "v2.0.0")
        unused = await api.delete("/software/v1.0.0")
        in_use = await api.delete("/software/v2.0.0")
        missing = await api.delete("/software/v9.9.9")
        listed = [i["version"] for i in (await api.get("/software")).json()["items"]]
    assert unused.status_code == 204
    assert not (settings.upload_dir / "1.0.0.pdf").exists()
    assert (settings.upload_dir / "2.0.0.pdf").exists()
    assert in_use.status_code == 409
    assert in_use.json()["error"]["code"] == "release_in_use"
    assert in_use.json()["error"]["sensors"] == 1
    assert missing.status_code == 404
    assert listed == ["v2.0.0"]


async def test_a_release_only_retired_sensors_ran_is_refused_saying_so(running, api, db, sensors):
    """The catalogue counts sensors in service: the refusal says the one running it is
    retired, or the operator sees "0 sensors" beside "in use by 1"."""
    with trio.fail_after(20):
        body = multipart([(b"v2.0.0.pdf", pdf(100))])
        await api.post("/upload", content=body, headers={"Content-Type": MULTIPART})
        await send(running.grpc_port, sensors[0], "v2.0.0")
        assert (await api.delete(f"/sensors/{sensors[0]}")).status_code == 204
        in_use = await api.delete("/software/v2.0.0")
    assert in_use.status_code == 409
    error = in_use.json()["error"]
    assert (error["sensors"], error["retired"]) == (1, 1)
    assert "1 sensor (1 of them retired)" in error["message"]


async def test_only_the_most_recently_reported_unreleased_versions_are_shown(running, api, db):
    """Sensors choose what they report: 150 versions nobody uploaded do not make 150 items of
    every summary and live frame, nor 300 metric series."""
    await seed.seed(db, 150)
    reports = [(seed.serial_for(n), f"9.0.{n}") for n in range(1, 151)]
    with trio.fail_after(20):
        await send_batch(running.grpc_port, reports[:50])
        await send_batch(running.grpc_port, reports[50:])  # reported last
        listed = (await api.get("/software/unreleased")).json()["items"]
        summary = (await api.get("/summary")).json()
        metrics = (await api.get("/metrics")).text
    assert len(listed) == UNRELEASED_SHOWN
    assert {i["version"] for i in listed} == {f"v9.0.{n}" for n in range(51, 151)}
    assert len(summary["unreleased"]) == UNRELEASED_SHOWN
    assert metrics.count("droneshield_unreleased_version_reports{") == UNRELEASED_SHOWN
