"""Request bodies with backpressure.

Quart's ASGI reader moves a request body into memory as fast as the client sends it and never
waits for the handler, so an upload written to disk more slowly than it arrives grows the
daemon by the difference (measured: +57 MB for a 1 GiB upload over loopback). Here the reader
stops while more than `HIGH_WATER` bytes are unread; hypercorn's bounded queue to the app then
stops reading the socket, and TCP slows the client down instead.

A handler that awaits the whole body (`await request.body`, `get_data`, `get_json`) switches
the limit off for its request: it wants everything in memory anyway, bounded by
MAX_CONTENT_LENGTH.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Final

import trio
from hypercorn.typing import ASGIReceiveCallable
from quart import request
from quart.wrappers import Request
from quart_trio import QuartTrio
from quart_trio.wrappers.request import TrioBody, TrioRequest

from .. import human
from ..errors import TooLarge
from .closing import ClosingHTTPConnection
from .errors import AnnouncedTooLarge

HIGH_WATER: Final = 1024 * 1024  # bytes of a body buffered before the reader waits


class BoundedBody(TrioBody):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._streamed = True  # until a handler awaits the whole body
        self._taken = trio.Event()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by the handler."""
        return len(self._data)

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._wake_reader()
        return data

    def __await__(self) -> Generator[Any, None, Any]:
        self._streamed = False
        self._wake_reader()
        return super().__await__()

    async def room(self) -> None:
        """Return once the handler has taken enough for more to be read (or wants it all)."""
        while self._streamed and len(self._data) > HIGH_WATER and self._must_raise is None:
            await self._taken.wait()

    def _wake_reader(self) -> None:
        self._taken.set()
        self._taken = trio.Event()


class BoundedRequest(TrioRequest):
    body_class = BoundedBody


class BoundedHTTPConnection(ClosingHTTPConnection):
    """quart-trio's connection, with a reader that waits for room in the body (and that lets
    the connection close: `closing`)."""

    # quart-trio's own handle_messages breaks its base's signature (it adds the nursery, and
    # ignores the error too); this one keeps quart-trio's.
    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        assert isinstance(body, BoundedBody)
        while True:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if message.get("more_body", False):
                    await body.room()
                else:
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        self.client_gone(nursery)


async def read_within(limit: int) -> bytes:
    """The request's body, refused as soon as it is known to be longer than `limit`: before
    reading when its length is announced, else while it arrives (chunked).

    Raises:
        AnnouncedTooLarge: Content-Length is over `limit` (the connection closes: the body
            is left unread). TooLarge: more than `limit` bytes arrived.
    """
    if (request.content_length or 0) > limit:
        raise AnnouncedTooLarge(f"the body exceeds {human.size(limit)}")
    chunks, size = [], 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body exceeds {human.size(limit)}", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def install(app: QuartTrio) -> None:
    app.request_class = BoundedRequest
    app.asgi_http_class = BoundedHTTPConnection
