"""How a droneshield process stops: SIGINT, SIGTERM or SIGHUP asks it to, once.

SIGHUP is what a closed terminal or ssh session sends: its default would end the process
without clean-up, leaving `dev`'s embedded PostgreSQL running and its children unsupervised.

Signals are received for as long as the work takes to stop, so a second Ctrl-C during shutdown
(uv, just or timeout forward one of their own) is absorbed and logged instead of being raised
as KeyboardInterrupt in the middle of the clean-up.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Final

import trio

log = logging.getLogger(__name__)

STOPPING: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run_until_signalled(
    work: Callable[[], Awaitable[object]], stop: Callable[[], None] | None = None
) -> None:
    """Run `work` until it returns; the first SIGINT/SIGTERM/SIGHUP calls `stop` (default:
    cancel `work`), later ones are only logged.

    Raises:
        What `work` raises.
    """
    with trio.open_signal_receiver(*STOPPING) as signals:
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def watch() -> None:
                stopping = False
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if stopping:
                        log.info("%s received; already stopping", name)
                        continue
                    stopping = True
                    log.info("%s received; shutting down", name)
                    (stop or scope.cancel)()

            nursery.start_soon(watch)
            with scope:
                await work()
            nursery.cancel_scope.cancel()
