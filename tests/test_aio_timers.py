"""Cancelled asyncio timers leave trio-asyncio's loop when cancelled, not 30 s later when due
(droneshield/aio_timers.py), on MockClock; timers that are not cancelled still fire on time."""

from __future__ import annotations

import asyncio
import gc
import weakref

import trio
import trio.testing
import trio_asyncio

from droneshield.aio_timers import PRUNE_AT_LEAST, prune_cancelled_timers

DEADLINE = 30.0  # seconds, as a client's gRPC deadline
CALLS = 5 * PRUNE_AT_LEAST


class _Held:
    """Stands for what a timer's callback holds (a call's deadline wrapper, a statement's
    result)."""


async def _schedule_and_cancel(loop: asyncio.AbstractEventLoop) -> list[weakref.ref[_Held]]:
    held = [_Held() for _ in range(CALLS)]
    handles = [loop.call_later(DEADLINE, lambda h: None, h) for h in held]
    await trio.testing.wait_all_tasks_blocked()  # the loop has moved them into its heap
    for handle in handles:
        handle.cancel()
    return [weakref.ref(h) for h in held]


async def test_cancelled_timers_are_dropped_with_what_they_hold(autojump_clock):
    fired: list[float] = []
    async with trio_asyncio.open_loop() as loop:
        prune_cancelled_timers(loop)
        loop.call_later(DEADLINE, lambda: fired.append(trio.current_time()))
        gc.disable()  # only reference counting frees what the dropped timers held
        try:
            refs = await _schedule_and_cancel(loop)
            alive = sum(r() is not None for r in refs)
        finally:
            gc.enable()
        assert len(loop._timers) < PRUNE_AT_LEAST
        assert alive < PRUNE_AT_LEAST
        await trio.sleep(DEADLINE + 1)
    assert fired == [DEADLINE]


async def test_without_pruning_trio_asyncio_keeps_cancelled_timers_until_due(autojump_clock):
    # The behaviour the module works around; if trio-asyncio ever drops them itself, this
    # fails and the module can go.
    async with trio_asyncio.open_loop() as loop:
        await _schedule_and_cancel(loop)
        assert len(loop._timers) == CALLS
        await trio.sleep(DEADLINE + 1)
        assert not loop._timers


async def test_closing_the_loop_cancels_every_timer_while_they_are_pruned(autojump_clock):
    fired: list[int] = []
    async with trio_asyncio.open_loop() as loop:
        prune_cancelled_timers(loop)
        handles = [loop.call_later(DEADLINE, fired.append, n) for n in range(CALLS)]
        await trio.testing.wait_all_tasks_blocked()
    assert all(h.cancelled() for h in handles)
    assert fired == []
