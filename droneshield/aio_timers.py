"""Cancelled asyncio timers leave trio-asyncio's loop when they are cancelled, not when due.

asyncio's own loop counts cancelled timers and rebuilds its heap without them once they are
over half of it. trio-asyncio's (0.16, pinned) keeps every timer until it comes due: its
`_timer_handle_cancelled` does nothing. Every gRPC call with a deadline leaves one there
(grpclib's deadline timer, cancelled as the call ends) and every statement another (asyncpg's
command timeout), each holding its callback, arguments and context: with clients' 30 s
deadlines, ~9,000 handles at 300 calls/s and ~60,000 at the unary ceiling, kept for the rest
of their 30 s. They were what triggered the collector's young passes on the call path once a
call left no garbage (`ingest.limits`), and each pass walked them before moving them on to
the older generations.

`prune_cancelled_timers` gives the loop asyncio's policy.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Final

import trio_asyncio

PRUNE_AT_LEAST: Final = 100  # cancelled timers before the heap is rebuilt (asyncio's figure)


class _Pruner:
    """The loop's `_timer_handle_cancelled`: counts cancellations, and once they are at least
    `PRUNE_AT_LEAST` and half the heap, rebuilds the heap without the cancelled timers
    (O(heap), so O(1) per cancellation)."""

    def __init__(self, loop: trio_asyncio.TrioEventLoop) -> None:
        self._loop = loop
        self._cancelled = 0

    def __call__(self, handle: asyncio.TimerHandle) -> None:
        self._cancelled += 1
        timers: list[asyncio.TimerHandle] = self._loop._timers
        if self._cancelled < PRUNE_AT_LEAST or 2 * self._cancelled < len(timers):
            return
        # `handle` is marked cancelled only after this returns. A new list, not the old one
        # changed in place: the loop looks `_timers` up at each use, and its `close` cancels
        # every timer while iterating over the list it had.
        kept = [t for t in timers if not t.cancelled() and t is not handle]
        heapq.heapify(kept)
        self._loop._timers = kept
        self._cancelled = 0


def prune_cancelled_timers(loop: trio_asyncio.TrioEventLoop) -> None:
    """Drop `loop`'s cancelled timers as asyncio's own loop does (see the module's docstring).
    Timers still in the loop's queue, not yet in its heap, are dropped by a later rebuild."""
    # An instance attribute: asyncio's TimerHandle.cancel calls it on the loop it was made for.
    loop._timer_handle_cancelled = _Pruner(loop)
