"""The HTTP port's listener, with `admission`'s caps applied as connections are accepted.

hypercorn has no hook for a connection cap; its trio worker serves whatever its listeners
accept. This listener wraps trio's: a refused connection is closed as soon as it is accepted,
before a TLS handshake, a byte of HTTP or a task (the cheapest a server can make it), and an
admitted one is released when its socket is closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ..admission import Admission, Limits, address_key
from ..config import Settings

Handler = Callable[[trio.abc.Stream], Awaitable[object]]


def http_limits(settings: Settings) -> Limits:
    return Limits(
        max_connections=settings.http_max_connections,
        per_address=settings.http_max_connections_per_address,
        rate=settings.http_connection_rate_per_address,
    )


class AdmittedStream(trio.abc.HalfCloseableStream):
    """An accepted connection that gives its slot back as soon as it is closed. hypercorn's
    handler for a connection returns only once the keep-alive timer it armed has run out, even
    when the client has long gone; the socket is closed before that."""

    def __init__(self, inner: trio.SocketStream, admission: Admission, address: str) -> None:
        self._inner = inner
        self._admission = admission
        self._address: str | None = address

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._inner.socket  # hypercorn reads the peer's and its own address

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        if self._address is not None:
            self._admission.release(self._address)
            self._address = None
        await self._inner.aclose()


def closing(handler: Handler) -> Handler:
    """`handler`, closing its connection when it returns (hypercorn leaves it open when a TLS
    handshake fails)."""

    async def handle(stream: trio.abc.Stream) -> None:
        try:
            await handler(stream)
        finally:
            # Under TLS, hypercorn is handed an SSLStream over the accepted stream.
            await getattr(stream, "transport_stream", stream).aclose()

    return handle


class AdmittingListener(trio.abc.Listener[AdmittedStream]):
    """`inner`'s connections that `admission` lets in; the rest are closed unread."""

    def __init__(self, inner: trio.SocketListener, admission: Admission) -> None:
        self._inner = inner
        self._admission = admission

    async def accept(self) -> AdmittedStream:
        while True:
            stream = await self._inner.accept()
            try:
                address = address_key(stream.socket.getpeername()[0])
            except OSError:  # gone already (reset before it was accepted)
                stream.socket.close()
                continue
            if self._admission.admit(address, trio.current_time()):
                return AdmittedStream(stream, self._admission, address)
            stream.socket.close()

    async def aclose(self) -> None:
        await self._inner.aclose()
