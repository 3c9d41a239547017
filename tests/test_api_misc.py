"""Summary, health, metrics, the OpenAPI document, errors and access logs, over real HTTP."""

from __future__ import annotations

import json
import logging
import os
import re

import trio

from droneshield.ingest.proto.status import DeviceStatus

from .support.grpc_clients import aio, grpclib_stub
from .support.releases import pdf, upload


async def test_summary_counts_by_status_and_version(running, api, db, sensors):
    with trio.fail_after(10):
        for seed, name in enumerate(["v1.0.0.pdf", "v1.1.0.pdf"]):
            await upload(api, [(name, pdf(seed=seed))])
        async with grpclib_stub(running.grpc_port) as stub:
            for serial, version in zip(sensors, ["1.0.0", "1.1.0", "1.1.0", "9.9.9"], strict=False):
                await aio(stub.send_status, DeviceStatus(serial=serial, software_version=version))
        await db.execute("UPDATE sensor SET online = false WHERE serial = $1", sensors[1])
        body = (await api.get("/summary")).json()
    [unreleased] = body.pop("unreleased")
    assert (unreleased["version"], unreleased["reports"]) == ("v9.9.9", 1)
    assert body == {
        "total": 10,
        "online": 3,
        "offline": 1,
        "never": 6,
        "versions": [
            {"version": "v1.1.0", "total": 2, "online": 1, "offline": 1, "never": 0},
            {"version": "v1.0.0", "total": 1, "online": 1, "offline": 0, "never": 0},
            {"version": None, "total": 7, "online": 1, "offline": 0, "never": 6},
        ],
    }


async def test_health_and_readiness(api):
    with trio.fail_after(10):
        assert (await api.get("/healthz")).json() == {"status": "ok"}
        assert (await api.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_expose_reports_batches_commits_uploads_and_gauges(running, api, sensors):
    with trio.fail_after(10):
        await upload(api, [("v1.0.0.pdf", pdf())])
        await upload(api, [("v1.0.0.txt", pdf())])
        async with grpclib_stub(running.grpc_port) as stub:
            await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version="1.0.0"))
            await aio(stub.send_status, DeviceStatus(serial=sensors[1], software_version="2.0.0"))
        response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    for line in (
        'droneshield_reports_total{outcome="ok"}',
        'droneshield_reports_total{outcome="version_not_stored"}',
        'droneshield_upload_files_total{outcome="created"}',
        'droneshield_upload_files_total{outcome="not_a_pdf"}',
        "droneshield_batch_size_reports_count",
        "droneshield_commit_seconds_count",
        'droneshield_lane_commits_total{lane="0"}',
        "droneshield_wheel_sensors",
        "droneshield_websocket_clients",
        'droneshield_http_request_seconds_count{method="POST",route="/upload",status="201"}',
        "process_resident_memory_bytes",
    ):
        assert line in text, line


async def test_openapi_describes_every_endpoint_and_its_errors(api):
    with trio.fail_after(10):
        document = (await api.get("/openapi.json")).json()
        docs = await api.get("/docs")
    paths = document["paths"]
    assert set(paths) >= {
        "/sensors",
        "/sensors/{serial}",
        "/sensors/{serial}/events",
        "/sites",
        "/software/unreleased",
        "/upload",
        "/software",
        "/software/{version}",
        "/software/{version}/file",
        "/summary",
        "/summary/history",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    upload_op = paths["/upload"]["post"]
    assert set(upload_op["responses"]) >= {"200", "201", "401", "409", "413", "415", "422"}
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert upload_op["security"] == [{"bearer": []}]
    assert (
        "application/pdf" in paths["/software/{version}/file"]["get"]["responses"]["200"]["content"]
    )
    assert {p["name"] for p in paths["/sensors"]["get"]["parameters"]} == {
        "page",
        "limit",
        "cursor",
        "status",
        "version",
        "site",
        "sort",
        "order",
        "q",
    }
    assert set(paths["/sensors"]["post"]["responses"]) >= {"200", "201", "409", "413", "422"}
    assert set(paths["/sensors/{serial}"]["delete"]["responses"]) >= {"204", "401", "404"}
    assert set(paths["/software/{version}"]["delete"]["responses"]) >= {"204", "409"}
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text


async def test_docs_load_their_scripts_from_this_server_not_a_cdn(api):
    with trio.fail_after(10):
        pages = [(await api.get(path)).text for path in ("/docs", "/redocs")]
        assets = re.findall(r'(?:src|href)="([^"]+)"', "".join(pages))
        loaded = [await api.get(asset) for asset in assets]
        unknown = await api.get("/docs/assets/..%2Fpyproject.toml")
    assert assets, pages
    assert all(asset.startswith("/docs/assets/") for asset in assets), assets
    assert all(r.status_code == 200 and len(r.content) > 1000 for r in loaded)
    assert unknown.status_code == 404


async def test_unknown_routes_and_methods_answer_json_errors(api):
    with trio.fail_after(10):
        missing = await api.get("/nothing-here")
        wrong_method = await api.delete("/sensors")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_access_log_is_json_with_the_request_id(api, caplog):
    caplog.set_level(logging.INFO, logger="droneshield.access")
    with trio.fail_after(10):
        given = await api.get("/healthz", headers={"X-Request-ID": "trace-42"})
        fresh = await api.get("/sensors", params={"limit": "x"})
    assert given.headers["X-Request-ID"] == "trace-42"
    generated = fresh.headers["X-Request-ID"]
    assert len(generated) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "droneshield.access"]
    by_id = {line["requestId"]: line for line in lines}
    assert by_id["trace-42"]["path"] == "/healthz"
    assert by_id["trace-42"]["status"] == 200
    assert by_id[generated]["status"] == 400
    assert by_id[generated]["query"] == "limit=x"
    assert by_id[generated]["route"] == "/sensors"
    assert by_id[generated]["pid"] == os.getpid()
