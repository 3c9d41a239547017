"""A real WebSocket client (trio-websocket) for `/ws`, as tests use it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream


class LiveClient:
    """Speaks the `/ws` protocol; answers pings unless told not to."""

    def __init__(self, conn: WebSocketConnection, *, answer_pings: bool = True) -> None:
        self.conn = conn
        self.answer_pings = answer_pings
        self.hello: dict[str, Any] = {}

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = orjson.dumps(message).decode()
        await self.conn.send_message(message)

    async def receive(self) -> dict[str, Any]:
        """The next message other than a ping."""
        while True:
            message = orjson.loads(await self.conn.get_message())
            if message["type"] != "ping":
                return message
            if self.answer_pings:
                await self.send({"type": "pong"})

    async def next(self, kind: str) -> dict[str, Any]:
        """The next message of type `kind`, skipping others."""
        while True:
            message = await self.receive()
            if message["type"] == kind:
                return message

    async def subscribe(
        self, serials: list[str] | None = None, where: dict[str, str] | None = None
    ) -> None:
        """Subscribe (to the serials, the filter, or both: a filtered page) and wait until the
        server confirms it is in force."""
        message: dict[str, Any] = {"type": "subscribe"}
        if serials is not None or where is None:
            message["serials"] = serials or []
        if where is not None:
            message["filter"] = where
        await self.send(message)
        await self.next("subscribed")


@asynccontextmanager
async def _connect(
    port: int, *, receive_buffer: int | None = None
) -> AsyncIterator[WebSocketConnection]:
    # Our own stream, closed on the way out: trio-websocket's client leaves its socket open
    # when the server is the one that closes the connection.
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    try:
        async with trio.open_nursery() as nursery:
            conn = await wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
            yield conn
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


@asynccontextmanager
async def open_live(port: int, *, answer_pings: bool = True) -> AsyncIterator[LiveClient]:
    async with _connect(port) as conn:
        client = LiveClient(conn, answer_pings=answer_pings)
        client.hello = await client.receive()
        assert client.hello["type"] == "hello"
        yield client
        with trio.move_on_after(1):
            await conn.aclose()


@asynccontextmanager
async def open_stalled(port: int) -> AsyncIterator[LiveClient]:
    """A client with a tiny receive buffer that the test stops reading from: after a few
    kilobytes the server's writes to it block."""
    async with _connect(port, receive_buffer=2048) as conn:
        yield LiveClient(conn, answer_pings=False)
