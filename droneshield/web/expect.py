"""`Expect: 100-continue` answered only once the request may send its body (a fix for hypercorn
0.18's HTTP/1.1).

hypercorn's h11 protocol writes `100 Continue` as soon as it has parsed a request head that asks
for it, before the app has run: a client with no or a wrong API key was invited to send its
upload, then refused with 401. Here the interim answer is held back at the connection's
stream (hypercorn writes it as one chunk, `HTTP/1.1 100 \r\n…\r\n\r\n`) until the app lets
the request go on (`proceed`, once its credentials are checked); if the final answer comes
first, the 100 is dropped (RFC 9110 §10.1.1: a server may answer with a final status instead),
so a refused client never sends its body. The gate reaches the app through a context variable
set in the connection's task: hypercorn spawns the app's tasks from there, and they inherit it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

import trio

from ..listeners import AdmittedStream

CONTINUE: Final = b"HTTP/1.1 100 \r\n"  # how h11 starts an interim 100 answer
HEAD_END: Final = b"\r\n\r\n"
HEAD_MAX: Final = 1024  # bytes: h11's 100 carries hypercorn's two headers (date, server)

_current: ContextVar[ContinueGate | None] = ContextVar("continue_gate", default=None)


class ContinueGate:
    """One connection's writes, with its `100 Continue` held until the app says go on."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._lock = trio.Lock()  # the app's `proceed` writes beside hypercorn's writer
        self._allowed = False  # the current request may send its body
        self._held: bytes | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            if not self._allowed and _is_continue(data):
                self._held = bytes(data)
                return
            self._held = None  # the final answer: a held 100 is dropped
            self._allowed = False  # for the connection's next request
            await self._stream.send_all(data)

    async def proceed(self) -> None:
        """The current request may send its body: write its held 100, or let it pass."""
        async with self._lock:
            self._allowed = True
            if self._held is not None:
                held, self._held = self._held, None
                await self._stream.send_all(held)

    def install(self) -> None:
        """Make this the gate of the tasks the current one spawns (the connection's app)."""
        _current.set(self)


def _is_continue(data: bytes | bytearray | memoryview) -> bool:
    """Whether `data` is a whole interim 100 head as h11 writes it (a body chunk of the same
    bytes, served by a range request, would be held too: only its own requester's loss)."""
    # Every write of every response passes here: look at a few bytes, not a copy of the chunk.
    return (
        len(data) <= HEAD_MAX
        and bytes(data[: len(CONTINUE)]) == CONTINUE
        and bytes(data[-len(HEAD_END) :]) == HEAD_END
    )


async def proceed() -> None:
    """App side: the current request's body is wanted; a client waiting for `100 Continue`
    gets it now. Nothing outside a gated connection (tests calling the app directly)."""
    gate = _current.get()
    if gate is not None:
        await gate.proceed()


class _Gated(trio.abc.Stream):
    """A connection as hypercorn's `TCPServer` uses it, with its writes through a gate."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.gate = ContinueGate(inner)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.gate.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _GatedPlain(_Gated):
    """Plaintext: hypercorn reads `socket` and half-closes (no `do_handshake`: not TLS)."""

    _inner: AdmittedStream

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._inner.socket

    async def send_eof(self) -> None:
        await self._inner.send_eof()


class _GatedTLS(_Gated):
    """TLS: the gate sees the plaintext; hypercorn asks for the handshake and ALPN."""

    _inner: trio.SSLStream[AdmittedStream]

    @property
    def transport_stream(self) -> AdmittedStream:
        return self._inner.transport_stream

    async def do_handshake(self) -> None:
        await self._inner.do_handshake()

    def selected_alpn_protocol(self) -> str | None:
        protocol: str | None = self._inner.selected_alpn_protocol()
        return protocol


def gated(stream: trio.abc.Stream) -> _Gated:
    """`stream` (as accepted, or TLS over it) with its 100 Continue gated; the gate installed
    for the tasks the current one spawns."""
    wrapped: _Gated = (
        _GatedTLS(stream) if isinstance(stream, trio.SSLStream) else _GatedPlain(stream)
    )
    wrapped.gate.install()
    return wrapped
