"""Both ports' listeners, with `admission`'s limits applied as connections are accepted.

A trio listener wrapped around the socket's: a refused connection is closed as soon as it is
accepted, before a TLS handshake, a byte of HTTP or a task, the cheapest a server can make it
(and one at a time: accepting yields between connections, so a flood of them cannot hold up
the event loop the way asyncio's accept loop does, which takes up to a backlog's worth at
once). An admitted connection gives its slot back when its socket is closed, or, handed over
to asyncio for gRPC, when grpclib's protocol for it has lost it.
"""

from __future__ import annotations

import socket

import trio

from .admission import Admission, address_key


class AdmittedStream(trio.abc.HalfCloseableStream):
    """An accepted connection that gives its slot back as soon as it is closed. hypercorn's
    handler for a connection returns only once the keep-alive timer it armed has run out, even
    when the client has long gone; the socket is closed before that."""

    def __init__(self, inner: trio.SocketStream, admission: Admission, address: str) -> None:
        self._inner = inner
        self._admission = admission
        self.address = address  # as admission counts it
        self._holds_slot = True

    def hand_over(self) -> socket.socket:
        """The connection's socket, for asyncio to serve; its slot is the taker's to release."""
        self._holds_slot = False
        return socket.socket(fileno=self._inner.socket.detach())

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
        if self._holds_slot:
            self._holds_slot = False
            self._admission.release(self.address)
        await self._inner.aclose()


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

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._inner.socket

    async def aclose(self) -> None:
        await self._inner.aclose()
