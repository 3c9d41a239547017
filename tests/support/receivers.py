"""Real HTTP receivers for webhook tests: a small h11 server on trio that records every POST,
and can answer 500 for a while, hang, close the connection, or check signatures."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["events"])


def signed_correctly(secret: str, r: Received) -> bool:
    timestamp = r.headers["x-droneshield-timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + r.body, hashlib.sha256)
    return hmac.compare_digest(r.headers["x-droneshield-signature"], f"sha256={mac.hexdigest()}")


@dataclass
class Receiver:
    """`answer(received) -> status | None` decides each reply: None hangs, -1 closes the
    connection without a reply. Accepted POSTs (2xx) are in `accepted`, all of them in `posts`,
    unless `keep` is False (a long run: `answer` sees every POST, nothing is kept)."""

    answer: Callable[[Received], int | None] = lambda r: 200
    headers: dict[str, str] = field(default_factory=dict)
    posts: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    port: int = 0
    keep: bool = True
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def event_ids(self) -> list[str]:
        return [e["id"] for r in self.accepted for e in r.events]

    async def wait_until(self, done: Callable[[Receiver], bool]) -> None:
        while not done(self):
            await self._changed.wait()

    async def serve(
        self, *, task_status: trio.TaskStatus[Receiver] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        # A sender killed mid-request resets its connection: a receiver drops that request,
        # as a real one does, and the sender's retry brings it again.
        with contextlib.suppress(trio.BrokenResourceError):
            await self._converse(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request, body = await _read_request(conn, stream)
                if request is None:
                    return
                received = Received(
                    {k.decode().lower(): v.decode() for k, v in request.headers}, body
                )
                status = self.answer(received)
                if self.keep:
                    self.posts.append(received)
                    if 200 <= (status or 0) < 300:
                        self.accepted.append(received)
                self._changed.set()
                self._changed = trio.Event()
                if status is None:
                    await trio.sleep_forever()
                if status == -1:
                    return
                headers = [("content-length", "2"), *self.headers.items()]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=b"no")))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request | None, bytes]:
    request = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
