"""The HTTP keep-alive timer (`web/keepalive.py`) in the daemon's hypercorn worker, on real
sockets and MockClock: an idle connection closes after the timeout and not before, a request
longer than the timeout is answered, stopping the server closes idle connections at once and
busy ones after their answer, and a connection its client closed frees its slot at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
from hypercorn.config import Config
from quart_trio import QuartTrio

from droneshield.admission import Admission, Limits
from droneshield.web import bodies
from droneshield.web.worker import serve

KEEP_ALIVE = 5.0  # seconds (virtual)
SLOW = 3 * KEEP_ALIVE  # seconds /slow takes to answer
GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def _app() -> QuartTrio:
    app = QuartTrio(__name__)
    bodies.install(app)  # the daemon's connection class (`closing`)

    @app.get("/fast")
    async def fast() -> str:
        return "fast"

    @app.get("/slow")
    async def slow() -> str:
        await trio.sleep(SLOW)
        return "slow"

    return app


@asynccontextmanager
async def serving(admission: Admission) -> AsyncIterator[tuple[int, trio.Event]]:
    """The worker on a free port: (port, the event that stops it)."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = KEEP_ALIVE
    config.graceful_timeout = 10 * SLOW
    config.accesslog = None
    stop = trio.Event()
    with trio.fail_after(10 * SLOW):
        async with trio.open_nursery() as nursery:
            run = partial(serve, _app(), config, admission, shutdown_trigger=stop.wait)
            binds = await nursery.start(run)
            yield int(binds[0].rsplit(":", 1)[1]), stop
            stop.set()


def _admission() -> Admission:
    return Admission(Limits(max_connections=10, per_address=10, rate=10), "HTTP")


async def ask(stream: trio.SocketStream, path: str) -> bytes:
    """Send GET `path` on `stream`; the answer's body."""
    await stream.send_all(GET % path.encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some()
    head, body = received.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive_some()
    assert head.startswith(b"HTTP/1.1 200")
    return body


async def closed_after(stream: trio.SocketStream) -> float:
    """Seconds until the server closes `stream` (nothing else may arrive)."""
    began = trio.current_time()
    assert await stream.receive_some() == b""
    return trio.current_time() - began


async def test_an_idle_connection_closes_after_the_timeout_and_not_before(autojump_clock):
    async with (
        serving(_admission()) as (port, _),
        await trio.open_tcp_stream("127.0.0.1", port) as s,
    ):
        assert await ask(s, "fast") == b"fast"
        await trio.sleep(0.9 * KEEP_ALIVE)
        assert await ask(s, "fast") == b"fast"  # still open; the timer starts again
        assert KEEP_ALIVE <= await closed_after(s) < KEEP_ALIVE + 0.1


async def test_a_request_longer_than_the_timeout_is_answered(autojump_clock):
    async with (
        serving(_admission()) as (port, _),
        await trio.open_tcp_stream("127.0.0.1", port) as s,
    ):
        began = trio.current_time()
        assert await ask(s, "slow") == b"slow"
        assert trio.current_time() - began >= SLOW
        assert KEEP_ALIVE <= await closed_after(s) < KEEP_ALIVE + 0.1


async def test_stopping_closes_idle_connections_at_once_and_busy_ones_once_answered(
    autojump_clock,
):
    async with (
        serving(_admission()) as (port, stop),
        await trio.open_tcp_stream("127.0.0.1", port) as idle,
        await trio.open_tcp_stream("127.0.0.1", port) as busy,
    ):
        assert await ask(idle, "fast") == b"fast"
        answers: list[bytes] = []

        async def slow_request() -> None:
            answers.append(await ask(busy, "slow"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_request)
            await trio.sleep(1)
            stop.set()
            assert await closed_after(idle) < 0.1
        assert answers == [b"slow"]
        assert await closed_after(busy) < 0.1


async def test_a_connection_its_client_closed_frees_its_slot_at_once(autojump_clock):
    admission = _admission()
    async with serving(admission) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert await ask(stream, "fast") == b"fast"
        await trio.sleep(1)  # the server has armed the timer
        assert admission.open == 1
        await stream.aclose()
        began = trio.current_time()
        while admission.open:  # noqa: ASYNC110 (only the count can tell)
            await trio.sleep(0.01)
        # hypercorn's own timer kept the connection, and its address's slot, until it ran out.
        assert trio.current_time() - began < 0.1
