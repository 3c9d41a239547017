"""Runs the app on hypercorn's trio worker inside the daemon's nursery."""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

log = logging.getLogger(__name__)

STOP_SLACK: Final = 1.0  # seconds beyond the grace period before hypercorn is cancelled


async def serve_http(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    grace: float,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve HTTP and WebSocket until cancelled; `started()` reports the bound port.

    Cancellation: hypercorn is stopped through its shutdown trigger, not cancelled, so open
    WebSockets get a proper close frame (1001) and requests in flight get `grace` seconds.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = grace
    config.accesslog = None  # the app logs requests itself, with request ids
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
