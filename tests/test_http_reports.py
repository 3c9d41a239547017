"""`POST /reports`: the JSON way in for devices without gRPC. Real HTTP client, real daemon,
real PostgreSQL; the gRPC batch is the reference for every outcome."""

from __future__ import annotations

import contextlib

import pytest
import trio

from droneshield.domain import ECHO_MAX

from .support.grpc_clients import send_batch
from .support.releases import add_software
from .test_ingest import LONG_VERSION

_LOCK_ALL = "SELECT 1 FROM sensor FOR UPDATE"


def _json(pairs: list[tuple[str, str]]) -> dict[str, object]:
    return {"reports": [{"serial": s, "softwareVersion": v} for s, v in pairs]}


async def test_reports_are_committed_and_answered_as_the_grpc_batch_is(running, api, db, sensors):
    await add_software(db, "1.0.0")
    pairs = [
        (sensors[0], "1.0.0"),
        ("", "1.0.0"),
        ("DS-99999999", "1.0.0"),
        (sensors[1], "7.7.7"),
        (sensors[2], "v1.0.0"),
        (sensors[3], "not-a-version"),
    ]
    with trio.fail_after(20):
        response = await api.post("/reports", json=_json(pairs))
        reference = await send_batch(running.grpc_port, pairs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "accepted": reference.accepted,
        "rejected": [
            {"index": r.index, "code": r.code, "reason": r.reason} for r in reference.rejected
        ],
    }
    assert body["accepted"] == 4
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "INVALID_ARGUMENT"),
        (2, "NOT_FOUND"),
        (3, "VERSION_NOT_STORED"),
        (5, "VERSION_NOT_STORED"),
    ]
    rows = {r["serial"]: r for r in await db.fetch("SELECT * FROM sensor WHERE online")}
    assert set(rows) == set(sensors[:4])
    assert rows[sensors[2]]["version"] == "1.0.0"


async def test_a_report_without_a_version_marks_the_sensor_online(api, db, sensors):
    with trio.fail_after(10):
        response = await api.post("/reports", json={"reports": [{"serial": sensors[0]}]})
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["reason"] == "no software version reported"
    assert await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0])


# httpx stops sending once the early 413 arrives and leaves its request-body generator to the
# garbage collector (a ResourceWarning inside httpx, reported as unraisable): not our code.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_bad_bodies_are_refused_with_a_clear_400_or_413(api, db, sensors):
    cases = [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 400, "invalid_body"),
        (b'{"reports": [{"softwareVersion": "1.0.0"}]}', 400, "invalid_body"),
        (b'{"reports": [{"serial": 7}]}', 400, "invalid_body"),
        (b'{"reports": []' + b" " * (4 * 1024 * 1024) + b"}", 413, "request_too_large"),
    ]

    with trio.fail_after(30):
        for body, status, code in cases:
            response = await api.post(
                "/reports", content=body, headers={"Content-Type": "application/json"}
            )
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        too_many = await api.post("/reports", json=_json([(sensors[0], "")] * 10_001))
    assert too_many.status_code == 400
    assert "reports" in too_many.json()["error"]["message"]
    assert not await db.fetchval("SELECT count(*) FROM sensor WHERE online")


async def test_reports_need_the_grpc_token_when_one_is_set(api_with, settings, db, sensors):
    api = await api_with(settings.replace(grpc_token="s3cret-token"))
    with trio.fail_after(10):
        refused = await api.post("/reports", json=_json([(sensors[0], "")]))
        wrong = await api.post(
            "/reports",
            json=_json([(sensors[0], "")]),
            headers={"Authorization": "Bearer nope"},
        )
        taken = await api.post(
            "/reports",
            json=_json([(sensors[0], "")]),
            headers={"Authorization": "Bearer s3cret-token"},
        )
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["error"]["code"] == "missing_report_token"
    assert wrong.json()["error"]["code"] == "invalid_report_token"
    assert taken.status_code == 200
    assert taken.json()["accepted"] == 1


async def test_a_database_stuck_past_the_deadline_is_a_503_and_nothing_is_acked(
    api_with, settings, db, sensors
):
    api = await api_with(settings.replace(ack_timeout=1.0))
    with trio.fail_after(20):
        async with db.transaction():
            await db.execute(_LOCK_ALL)  # the writer's statement waits past the deadline
            response = await api.post("/reports", json=_json([(sensors[0], "")]))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert "retry" in response.json()["error"]["message"]
    assert not await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0])


async def test_a_client_gone_before_the_commit_does_not_disturb_the_daemon(api, sensors):
    with trio.fail_after(10):
        with trio.move_on_after(0.001):
            await api.post("/reports", json=_json([(s, "") for s in sensors]))
        response = await api.post("/reports", json=_json([(sensors[0], "")]))
    assert response.status_code == 200


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(running):
    # No Content-Length: the limit applies while the body arrives (a raw socket, since httpx
    # reports a connection closed mid-upload instead of the early answer).
    chunk = b" " * 65_536
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", running.http_port)
        async with stream:
            await stream.send_all(
                b"POST /reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            answer = b""
            with trio.move_on_after(10), contextlib.suppress(trio.BrokenResourceError):
                for _ in range(100):  # 6.5 MB, past the 4 MiB limit
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            while b"\r\n\r\n" not in answer and (data := await stream.receive_some()):
                answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer


async def test_a_version_too_long_is_answered_as_over_grpc_and_spares_the_others(
    running, api, db, sensors
):
    await add_software(db, "1.0.0")
    long_one, other = sensors[:2]  # one call's reports: one batch of the first writer lane
    pairs = [(long_one, LONG_VERSION), (other, "v1.0.0")]
    with trio.fail_after(20):
        response = await api.post("/reports", json=_json(pairs))
        reference = await send_batch(running.grpc_port, pairs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == reference.accepted == 2
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(0, "VERSION_NOT_STORED")]
    assert body["rejected"][0]["reason"] == reference.rejected[0].reason
    assert "longer than 128 characters" in body["rejected"][0]["reason"]
    assert LONG_VERSION[: ECHO_MAX + 1] not in body["rejected"][0]["reason"]
    assert await db.fetchval("SELECT version FROM sensor WHERE serial = $1", other) == "1.0.0"
