"""`/ws`: live sensor changes and fleet totals for the dashboard.

Each connection has its own hub subscription and four small tasks: one reads client messages,
one flushes coalesced sensor changes (at most every FLUSH_INTERVAL), one sends fleet totals when
they change, one pings and drops a client that stops answering. Nothing is queued per client
beyond the subscription's latest-state-per-sensor map, so a stalled client costs a bounded amount
of memory and never delays anyone else; its blocked send is ended by the server socket's
TCP_USER_TIMEOUT (see `server.py`), since hypercorn does not let a send be cancelled.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

import trio
from quart import Blueprint, current_app, websocket
from quart.wrappers import Websocket

from ..config import Settings
from ..hub import Hub, Subscription
from . import messages
from .messages import ProtocolError, Subscribe

log = logging.getLogger(__name__)

blueprint = Blueprint("live", __name__)

FLUSH_INTERVAL: Final = 0.1  # seconds between two sensor flushes to one client (≤ 10/s)
CLIENT_MAX_PENDING: Final = 2_000  # changed sensors held per client before it must resync
CLOSE_UNRESPONSIVE: Final = 4408  # application code: no pong within ws_timeout


class _Close(Exception):
    """Ends a connection with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@blueprint.websocket("/ws")
async def ws() -> None:
    config = current_app.config
    await websocket.accept()
    client = LiveClient(
        # The proxied object itself; werkzeug types the proxy as its target, without this.
        websocket._get_current_object(),  # type: ignore[attr-defined]
        config["DRONESHIELD_HUB"],
        config["DRONESHIELD_SETTINGS"],
    )
    await client.serve()


class LiveClient:
    """One WebSocket connection."""

    def __init__(self, socket: Websocket, hub: Hub, settings: Settings) -> None:
        self._socket = socket
        self._hub = hub
        self._settings = settings
        self._heard = trio.current_time()

    async def serve(self) -> None:
        """Serve until the client leaves or is dropped.

        Cancellation: quart cancels this when the client disconnects; the subscription is
        detached on the way out.
        """
        settings = self._settings
        await self._socket.send(
            messages.hello(
                datetime.now(UTC),
                offline_after=settings.offline_after,
                ping_interval=settings.ws_ping_interval,
            )
        )
        with self._hub.subscribe((), max_pending=CLIENT_MAX_PENDING) as sub:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._receive, sub)
                    nursery.start_soon(self._flush_changes, sub)
                    nursery.start_soon(self._send_summaries)
                    nursery.start_soon(self._keep_alive)
            except* _Close as group:
                close = group.exceptions[0]
                assert isinstance(close, _Close)
                log.info("closing WebSocket client: %s (%d)", close.reason, close.code)
                await self._socket.close(close.code, close.reason)

    async def _receive(self, sub: Subscription) -> None:
        while True:
            data = await self._socket.receive()
            self._heard = trio.current_time()
            try:
                message = messages.parse(data, max_serials=self._settings.ws_max_serials)
            except ProtocolError as exc:
                await self._socket.send(messages.error(exc.code, exc.message))
                continue
            if isinstance(message, Subscribe):
                self._hub.resubscribe(sub, message.serials, match=message.match)
                await self._socket.send(messages.subscribed(message))

    async def _flush_changes(self, sub: Subscription) -> None:
        # The first change after a quiet spell goes out at once; later ones gather for up to
        # FLUSH_INTERVAL, so a burst of any size costs a client at most 10 flushes a second.
        next_flush = trio.current_time()
        while True:
            await sub.wait()
            await trio.sleep_until(next_flush)
            overflowed = sub.overflowed
            changes = sub.take()
            if overflowed:
                await self._socket.send(messages.resync("too many changes to send one by one"))
            for text in messages.sensors(changes):
                await self._socket.send(text)
            next_flush = trio.current_time() + FLUSH_INTERVAL

    async def _send_summaries(self) -> None:
        summary = self._hub.summary
        seen = 0
        with summary.watch():
            while True:
                seen, totals = await summary.wait_newer(seen)
                await self._socket.send(messages.summary(totals))

    async def _keep_alive(self) -> None:
        interval, timeout = self._settings.ws_ping_interval, self._settings.ws_timeout
        next_ping = trio.current_time() + interval
        while True:
            await trio.sleep_until(min(next_ping, self._heard + timeout))
            now = trio.current_time()
            if now >= self._heard + timeout:
                raise _Close(CLOSE_UNRESPONSIVE, f"no answer to ping for {timeout:g} s")
            if now >= next_ping:
                await self._socket.send(messages.ping())
                next_ping = now + interval
