"""Hostile clients on the HTTP port, on raw sockets and httpx against the running daemon:
connections that must close (HTTP/1.0, `Connection: close`, early 401 and 413, keep-alive
timeout), made-up methods against `/metrics`, hostile `Range` headers, a forged Host header on
a redirect, credentials in the query string, long input echoed back."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from droneshield.config import Settings
from droneshield.domain import ECHO_MAX
from droneshield.web.app import create_app

from .support.releases import pdf, upload

API_KEY = "ak-hostile-0123456789"
KEEP_ALIVE = 0.5  # seconds


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(api_key=API_KEY, http_keep_alive_timeout=KEEP_ALIVE)


async def exchange(port: int, request: bytes, *, bound: float = 5.0) -> tuple[bytes, bool]:
    """Send `request` raw; what came back, and whether the server closed within `bound` s."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    answer = b""
    with trio.move_on_after(bound) as waiting:
        await stream.send_all(request)
        while chunk := await stream.receive_some():
            answer += chunk
    await stream.aclose()
    return answer, not waiting.cancelled_caught


UPLOAD_HEAD = (
    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # closed after the keep-alive timeout
        UPLOAD_HEAD + b"Content-Length: 100000\r\n\r\n" + b"x" * 5000,  # 401, body unread
        UPLOAD_HEAD + b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
        b"Content-Length: 999999999999\r\n\r\n",  # 413
    ],
    ids=["http-1.0", "connection-close", "keep-alive-timeout", "early-401", "early-413"],
)
async def test_connection_is_closed_when_the_exchange_is_over(running, request_bytes, caplog):
    with trio.fail_after(10):
        answer, closed = await exchange(running.http_port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 ")
    assert closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_made_up_methods_count_as_other_and_paths_by_route(running, api, settings):
    with trio.fail_after(20):
        for n in range(50):
            request = f"M{n:04d}XYZ /sensors/DS-{n} HTTP/1.0\r\n\r\n".encode()
            await exchange(running.http_port, request, bound=1.0)
            await api.get(f"/nothing-{n}")
        exposition = (await api.get("/metrics")).text
    lines = [line for line in exposition.splitlines() if "droneshield_http_request" in line]
    assert not [line for line in lines if "XYZ" in line or "nothing-" in line or "DS-" in line]
    assert any('method="other"' in line for line in lines)
    routes = {line.split('route="')[1].split('"')[0] for line in lines if 'route="' in line}
    rules = {rule.rule for rule in create_app(settings, None).url_map.iter_rules()}  # type: ignore[arg-type]
    assert routes <= rules | {"unmatched"}
    assert len(routes) <= len(rules) + 1


@pytest.fixture
async def release(api) -> bytes:
    content = pdf(1009)
    with trio.fail_after(10):
        await upload(api, [("v1.0.0.pdf", content)], headers={"Authorization": f"Bearer {API_KEY}"})
    return content


@pytest.mark.parametrize(
    ("header", "status", "part"),
    [
        ("bytes=-4", 206, slice(1005, 1009)),
        ("bytes=0-5000", 206, slice(0, 1009)),
        ("bytes=1000-", 206, slice(1000, 1009)),
        ("bytes=0-99999999999999999999", 206, slice(0, 1009)),
        ("bytes=99999999999999999999-", 416, None),
        ("bytes=1009-", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=5-2", 200, slice(0, 1009)),
        ("bytes=0-1,5-6", 200, slice(0, 1009)),
        ("items=0-1", 200, slice(0, 1009)),
        ("bytes=" + "9" * 5000 + "-", 200, slice(0, 1009)),
    ],
)
async def test_ranges_follow_rfc_9110(api, release, header, status, part):
    with trio.fail_after(10):
        answer = await api.get("/software/v1.0.0/file", headers={"Range": header})
    assert answer.status_code == status
    if part is None:
        assert answer.headers["Content-Range"] == "bytes */1009"
        return
    assert answer.content == release[part]
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    if status == 206:
        assert answer.headers["Content-Range"] == f"bytes {part.start}-{part.stop - 1}/1009"


async def test_redirect_location_ignores_a_forged_host(running):
    with trio.fail_after(10):
        answer, _ = await exchange(
            running.http_port,
            b"GET /sensors//DS-1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        )
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert " 308 " in head.splitlines()[0]
    assert "location: /sensors/ds-1\r" in head + "\r"
    assert "evil" not in head


async def test_query_credentials_are_masked_in_the_access_log(api, caplog):
    caplog.set_level(logging.INFO, logger="droneshield.access")
    with trio.fail_after(10):
        await api.get("/healthz", params={"api_key": "secret-of-someone", "x": "1"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "droneshield.access"]
    assert lines[-1]["query"] == "api_key=***&x=1"
    assert "secret-of-someone" not in caplog.text


async def test_error_messages_echo_at_most_a_short_prefix(api):
    with trio.fail_after(10):
        answer = await api.get("/sensors/" + "S" * 5000)
    message = answer.json()["error"]["message"]
    assert answer.status_code == 404
    assert "S" * (ECHO_MAX + 1) not in message
    assert message.endswith("…")


EXPECT_HEAD = (
    b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 9\r\nExpect: 100-continue\r\n"
)


@pytest.mark.parametrize(
    "authorization", [b"", b"Authorization: Bearer not-the-key\r\n"], ids=["missing", "wrong"]
)
async def test_expect_100_continue_without_the_key_gets_401_and_no_100(running, authorization):
    with trio.fail_after(10):
        answer, closed = await exchange(running.http_port, EXPECT_HEAD + authorization + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b" 100 " not in answer.split(b"\r\n")[0]
    assert closed  # the body was never sent, and never waited for


async def test_expect_100_continue_with_the_key_gets_100_then_the_answer(running):
    authorization = b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", running.http_port)
        await stream.send_all(EXPECT_HEAD + authorization + b"Connection: close\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += await stream.receive_some()
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"not json!")
        answer = interim.split(b"\r\n\r\n", 1)[1]
        while chunk := await stream.receive_some():
            answer += chunk
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 400 ")
