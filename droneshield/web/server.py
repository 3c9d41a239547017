"""Runs the app on hypercorn's trio worker inside the daemon's nursery."""

from __future__ import annotations

import logging
import socket
from typing import Final, NoReturn

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio import serve
from quart_trio import QuartTrio

log = logging.getLogger(__name__)

STOP_SLACK: Final = 1.0  # seconds beyond the grace period before hypercorn is cancelled


class _Config(Config):
    """hypercorn's config, with TCP_USER_TIMEOUT on the listening sockets (accepted sockets
    inherit it). hypercorn shields its socket writes, so a client that stops reading would
    otherwise block its handler, and the server's shutdown, for ever (measured: a stalled
    WebSocket client hangs shutdown); with it the kernel drops such a client after
    `send_timeout` seconds and the write fails."""

    send_timeout: float | None = None

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        if self.send_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    timeout_ms = int(self.send_timeout * 1000)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        return sockets


async def serve_http(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    grace: float,
    send_timeout: float | None = None,
    websocket_max_message: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP and WebSocket until cancelled; `started()` reports the bound port.

    Cancellation: hypercorn is stopped through its shutdown trigger, not cancelled, so open
    WebSockets get a proper close frame (1001) and requests in flight get `grace` seconds.
    A client that stopped reading can hold shutdown up to `send_timeout` seconds. A WebSocket
    message longer than `websocket_max_message` closes its connection with 1009, as soon as
    that much has arrived (hypercorn's own limit, so it is never buffered whole).
    """
    config = _Config()
    config.send_timeout = send_timeout
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = grace
    config.accesslog = None  # the app logs requests itself, with request ids
    if websocket_max_message is not None:
        config.websocket_max_message_size = websocket_max_message
    shutdown = trio.Event()
    # Shielded so the daemon's cancellation reaches hypercorn only through `shutdown`.
    shield = trio.CancelScope(shield=True)

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        with shield:
            await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        bound = int(binds[0].rsplit(":", 1)[1])
        log.info("HTTP listening on %s:%d", host, bound)
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            shutdown.set()
            shield.deadline = trio.current_time() + grace + STOP_SLACK
    raise AssertionError("unreachable")  # pragma: no cover
