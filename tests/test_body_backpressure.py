"""A request body is read from the socket only as fast as the handler takes it: a client
sending faster than an upload is written waits in TCP, not in the daemon's memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import httpx
import trio
import trio.testing
from quart import request
from quart_trio import QuartTrio

from droneshield.web import bodies
from droneshield.web.server import serve_http

MiB = 1024 * 1024
SENT = 64 * MiB
CHUNK = 64 * 1024


def _app(gate: trio.Event, buffered: list[int]) -> QuartTrio:
    app = QuartTrio(__name__)
    bodies.install(app)

    @app.post("/slow")
    async def slow() -> dict[str, int]:
        body = request.body
        assert isinstance(body, bodies.BoundedBody)
        received = len(await body.__anext__())
        await gate.wait()  # the handler falls behind: the client keeps sending
        buffered.append(body.buffered)
        async for chunk in body:
            received += len(chunk)
        return {"received": received}

    @app.post("/whole")
    async def whole() -> dict[str, int]:
        return {"received": len(await request.get_data())}

    return app


async def _content(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // CHUNK):
        yield b"x" * CHUNK


async def test_a_handler_that_falls_behind_holds_back_the_client_not_memory():
    gate, buffered = trio.Event(), []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_http, _app(gate, buffered), "127.0.0.1", 0, grace=1)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            replies = []

            async def post() -> None:
                replies.append(await client.post("/slow", content=_content(SENT)))

            nursery.start_soon(post)
            with trio.fail_after(30):
                # Everyone waits: the client on a full socket, the reader for room, the handler
                # for the gate. Without backpressure the reader would have taken all 64 MiB.
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                gate.set()
                while not replies:
                    await trio.testing.wait_all_tasks_blocked()
            assert buffered[0] <= bodies.HIGH_WATER + CHUNK
            assert replies[0].json() == {"received": SENT}  # nothing lost on the way

            # Awaiting the whole body switches the limit off (no deadlock).
            reply = await client.post("/whole", content=_content(8 * MiB))
            assert reply.json() == {"received": 8 * MiB}
        nursery.cancel_scope.cancel()
