"""Writes of one pass of the event loop leave as one send.

grpclib writes each frame group as it makes it: a unary answer is three sends (headers, the
message, the trailers), each its own TCP segment (grpclib sets TCP_NODELAY) and, on a client
that is waiting, its own wake-up. py-spy on a daemon paced at 150 calls/s put over a quarter of
its CPU in those sends. A corked transport keeps the writes of the running callback and sends
them together once it has returned (`call_soon`): one send per answer, or per several answers
of a busy connection.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CorkedTransport:
    """`transport`, its writes joined until the loop's next pass; everything else passed on.
    Closing sends what is held first; aborting drops it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(data)

    def _send(self) -> None:
        if not self._held:
            return
        data = b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def close(self) -> None:
        self._send()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
