"""Runs the app on hypercorn's trio worker inside the daemon's nursery."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Final, NoReturn

import trio
from hypercorn.config import Config, Sockets
from quart_trio import QuartTrio

from ..admission import Admission, Limits
from ..config import (
    CONNECTION_RATE_PER_ADDRESS_DEFAULT,
    HTTP_MAX_CONNECTIONS_DEFAULT,
    MAX_CONNECTIONS_PER_ADDRESS_DEFAULT,
    Settings,
)
from ..config import HTTP_KEEP_ALIVE_TIMEOUT_DEFAULT as KEEP_ALIVE_TIMEOUT_DEFAULT
from ..ports import shared_socket
from .worker import serve


def http_limits(settings: Settings) -> Limits:
    return Limits(
        max_connections=settings.http_max_connections,
        per_address=settings.http_max_connections_per_address,
        rate=settings.http_connection_rate_per_address,
    )


DEFAULT_LIMITS: Final = Limits(
    max_connections=HTTP_MAX_CONNECTIONS_DEFAULT,
    per_address=MAX_CONNECTIONS_PER_ADDRESS_DEFAULT,
    rate=CONNECTION_RATE_PER_ADDRESS_DEFAULT,
)

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


def _shared_bind(host: str, port: int) -> str:
    """hypercorn binds with SO_REUSEPORT only when it forks workers of its own, so a shared port
    is bound here and handed over as `fd://`, with the TCP_NODELAY hypercorn would have set."""
    sock = shared_socket(host, port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return f"fd://{sock.detach()}"


async def serve_http(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    grace: float,
    send_timeout: float | None = None,
    reuse_port: bool = False,
    tls: tuple[Path, Path] | None = None,
    websocket_max_message: int | None = None,
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT_DEFAULT,
    limits: Limits = DEFAULT_LIMITS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP and WebSocket until cancelled; `started()` reports the bound port.

    With `tls` (certificate chain, key: PEM files) only HTTPS and WSS are spoken on the port;
    hypercorn loads them at start, so a bad file fails the start.

    Cancellation: hypercorn is stopped through its shutdown trigger, not cancelled, so open
    WebSockets get a proper close frame (1001) and requests in flight get `grace` seconds.
    A client that stopped reading can hold shutdown up to `send_timeout` seconds. A WebSocket
    message longer than `websocket_max_message` closes its connection with 1009, as soon as
    that much has arrived (hypercorn's own limit, so it is never buffered whole).
    With `reuse_port`, other processes may listen on the same port (SO_REUSEPORT). A connection
    with no request for `keep_alive_timeout` seconds is closed (see `closing` for why that
    needed a fix). Connections are admitted within `limits` (see `admission`).
    """
    config = _Config()
    config.send_timeout = send_timeout
    config.bind = [_shared_bind(host, port) if reuse_port else f"{host}:{port}"]
    config.graceful_timeout = grace
    config.keep_alive_timeout = keep_alive_timeout
    config.accesslog = None  # the app logs requests itself, with request ids
    # A logger, not hypercorn's default stderr handler, so its lines pass the secret masking.
    config.errorlog = logging.getLogger("hypercorn.error")
    if tls is not None:
        config.certfile, config.keyfile = (str(path) for path in tls)
    if websocket_max_message is not None:
        config.websocket_max_message_size = websocket_max_message
    shutdown = trio.Event()
    # Shielded so the daemon's cancellation reaches hypercorn only through `shutdown`.
    shield = trio.CancelScope(shield=True)

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        with shield:
            await serve(
                app,
                config,
                Admission(limits, "HTTP"),
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        bound = int(binds[0].rsplit(":", 1)[1])
        log.info("HTTP listening on %s:%d (%s)", host, bound, "TLS" if tls else "plaintext")
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            shutdown.set()
            shield.deadline = trio.current_time() + grace + STOP_SLACK
    raise AssertionError("unreachable")  # pragma: no cover
