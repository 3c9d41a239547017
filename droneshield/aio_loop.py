"""asyncio's own loop policies that trio-asyncio's loop (0.16, pinned) lacks, given to the
daemon's loop by `open_loop` (grpclib and asyncpg run there: the one asyncio boundary).

Ready callbacks run together. asyncio's loop runs, at each turn, every callback that was ready
when the turn began; trio-asyncio's takes one callback per pass through trio's scheduler (a
checkpoint and a cancel scope each, and the scheduler's own round between them). A statement
took six passes (the task's step, asyncpg's command timer, the answer read, the read's
synchronisation, the task's wake-up, the result), three with `run_ready_together`; a gRPC call
more. Measured in alternated runs on one machine: a `SELECT 1` loop 270-475 against 246-354
us of CPU a statement; unary calls, 200 in flight, 0.39-0.46 against 0.32-0.41 ms of CPU a
call on bare grpclib and 0.42-0.58 against 0.30-0.46 in the daemon; in `just bench ingest`
bare grpclib on this loop went from 88 % of its rate on asyncio's own loop to 99 %, and the
daemon's closed loop from 70 % of it to 91 %. (`GET /sensors`, one request in flight, showed
no difference.) A pass runs the callback it waited for, then at most TURN_MAX of those queued
by then (those the first one queued included), and trio's other tasks get their turn at
every pass, so an asyncio callback that keeps queueing itself, or re-arms a timer that is
already due, cannot starve them, and a socket read that queues hundreds of callbacks is run
over several passes.

Cancelled timers leave the loop when they are cancelled, not when due. asyncio's own loop
counts cancelled timers and rebuilds its heap without them once they are over half of it.
trio-asyncio's keeps every timer until it comes due: its `_timer_handle_cancelled` does
nothing. Every gRPC call with a deadline leaves one there (grpclib's deadline timer, cancelled
as the call ends) and every statement another (asyncpg's command timeout), each holding its
callback, arguments and context: with clients' 30 s deadlines, ~9,000 handles at 300 calls/s
and ~60,000 at the unary ceiling, kept for the rest of their 30 s. They were what triggered
the collector's young passes on the call path once a call left no garbage (`ingest.limits`),
and each pass walked them before moving them on to the older generations.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import trio
import trio_asyncio

PRUNE_AT_LEAST: Final = 100  # cancelled timers before the heap is rebuilt (asyncio's figure)
TURN_MAX: Final = 64  # callbacks a pass runs after the one it waited for


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
    """Drop `loop`'s cancelled timers as asyncio's own loop does.
    Timers still in the loop's queue, not yet in its heap, are dropped by a later rebuild."""
    # An instance attribute: asyncio's TimerHandle.cancel calls it on the loop it was made for.
    loop._timer_handle_cancelled = _Pruner(loop)


def run_ready_together(loop: trio_asyncio.TrioEventLoop) -> None:
    """Let each of `loop`'s passes run, after the callback it waited for, up to TURN_MAX of
    those queued by then, as asyncio's own loop runs every callback ready at a turn's start,
    instead of one (see the module's docstring). Takes effect at the loop's next pass; given
    twice, once."""
    if "_main_loop_one" in vars(loop):
        return  # already given: the pass is an instance attribute only then
    one: Callable[..., Awaitable[None]] = loop._main_loop_one

    async def turn(no_wait: bool = False) -> None:
        if not no_wait and loop._timers and loop._timers[0]._when <= loop.time():
            # trio-asyncio runs a due timer without waiting for anything: the pass's one
            # checkpoint is here then (the loop's task is shielded: it raises nothing).
            await trio.lowlevel.checkpoint()
        await one(no_wait)  # waits for a callback (or a due timer), and runs it
        # Then those queued by now, without waiting: trio-asyncio's own pass with no_wait
        # runs a due timer or takes one item of the queue, else raises WouldBlock.
        ready = loop._q_recv.statistics().current_buffer_used
        for _ in range(min(ready, TURN_MAX)):
            try:
                await one(no_wait=True)
            except trio.WouldBlock:
                return

    # An instance attribute: the loop's pass looks `_main_loop_one` up at each turn.
    loop._main_loop_one = turn


@asynccontextmanager
async def open_loop() -> AsyncIterator[trio_asyncio.TrioEventLoop]:
    """`trio_asyncio.open_loop()` with asyncio's policies (`prune_cancelled_timers`,
    `run_ready_together`): the loop the daemon runs grpclib and asyncpg on."""
    async with trio_asyncio.open_loop() as loop:
        prune_cancelled_timers(loop)
        run_ready_together(loop)
        yield loop
