"""Jobs run on a schedule by the long-running tasks (the presence sweep and pruning, the
dispatcher's gauges, fleet checks and pruning)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

from .db.pool import is_transient

log = logging.getLogger(__name__)


async def every(
    job: Callable[[], Awaitable[object]],
    first: float,
    interval: float,
    *,
    transient: Callable[[BaseException], bool] = is_transient,
) -> NoReturn:
    """Run `job` after `first` seconds, then every `interval`; an error `transient` accepts
    (a database error, by default) is logged and waits for the next run, any other
    propagates."""
    await trio.sleep(first)
    while True:
        try:
            await job()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("%s failed (%r); next run in %.0f s", job.__name__, exc, interval)
        await trio.sleep(interval)
