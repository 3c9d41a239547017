"""A corked transport (droneshield/ingest/corking.py) on a real socket pair and trio-asyncio's
loop: the writes of one callback reach the socket as one send, closing sends what is held
first, aborting drops it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
import trio_asyncio

from droneshield.ingest.corking import CorkedTransport

FRAMES = (b"headers", b"message", b"trailers")  # what grpclib writes for one unary answer


@asynccontextmanager
async def _corked() -> AsyncIterator[tuple[CorkedTransport, list[bytes], socket.socket]]:
    """A corked transport over one end of a socket pair, the sends that reached the real
    transport, and the other end."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)

    async def connect() -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        return transport

    async with trio_asyncio.open_loop() as loop:
        transport = await trio_asyncio.aio_as_trio(connect)()
        sends: list[bytes] = []
        write = transport.write

        def counted(data: bytes) -> None:
            sends.append(bytes(data))
            write(data)

        transport.write = counted  # type: ignore[method-assign]
        try:
            yield CorkedTransport(transport, loop), sends, peer
        finally:
            transport.abort()
            peer.close()


async def _read(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        await trio.lowlevel.wait_readable(peer)
        chunk = peer.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def test_the_writes_of_one_callback_leave_as_one_send():
    async with _corked() as (corked, sends, peer):
        for frame in FRAMES:
            corked.write(frame)
        assert sends == []
        assert corked.get_write_buffer_size() == sum(map(len, FRAMES))
        with trio.fail_after(5):
            assert await _read(peer, sum(map(len, FRAMES))) == b"".join(FRAMES)
        assert sends == [b"".join(FRAMES)]


async def test_closing_sends_what_is_held_first():
    async with _corked() as (corked, sends, peer):
        corked.write(b"goaway")
        corked.close()
        with trio.fail_after(5):
            assert await _read(peer, 100) == b"goaway"  # then the end of the stream
        assert sends == [b"goaway"]


async def test_aborting_drops_what_is_held():
    async with _corked() as (corked, sends, _):
        corked.write(b"never")
        corked.abort()
        await trio.testing.wait_all_tasks_blocked()
        assert sends == []
