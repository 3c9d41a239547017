"""asyncio's loop policies on trio-asyncio's loop (droneshield/aio_loop.py): callbacks ready
together run in one pass of trio's scheduler, and no more than those; cancelled timers leave
the loop when cancelled, not 30 s later when due (on MockClock); timers that are not cancelled
still fire on time."""

from __future__ import annotations

import asyncio
import gc
import weakref

import trio
import trio.testing
import trio_asyncio

from droneshield.aio_loop import (
    PRUNE_AT_LEAST,
    as_asyncio_runs,
    run_ready_together,
)

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
        as_asyncio_runs(loop)
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
        as_asyncio_runs(loop)
        handles = [loop.call_later(DEADLINE, fired.append, n) for n in range(CALLS)]
        await trio.testing.wait_all_tasks_blocked()
    assert all(h.cancelled() for h in handles)
    assert fired == []


class _Passes:
    """Counts passes of trio's scheduler: a task that is always runnable runs once a pass."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            await trio.lowlevel.checkpoint()
            self.count += 1


async def _passes_seen(loop: trio_asyncio.TrioEventLoop, callbacks: int) -> list[int]:
    """The pass in which each of `callbacks` callbacks, queued together, ran."""
    passes, seen = _Passes(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(passes.run)
        for _ in range(callbacks):
            loop.call_soon(lambda: seen.append(passes.count))
        while len(seen) < callbacks:
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    return seen


async def _settled(loop: trio_asyncio.TrioEventLoop) -> None:
    """Returns once the loop has run a callback queued now: a policy given to it meanwhile is
    then in force (the pass that was waiting when it was given took that callback)."""
    ran = trio.Event()
    loop.call_soon(ran.set)
    await ran.wait()


async def test_callbacks_ready_together_run_in_one_pass():
    async with trio_asyncio.open_loop() as loop:
        run_ready_together(loop)
        await _settled(loop)
        seen = await _passes_seen(loop, 5)
    assert len(set(seen)) == 1, seen


async def test_without_the_policy_trio_asyncio_runs_one_callback_a_pass():
    # The behaviour the policy works around; if trio-asyncio ever runs them together itself,
    # this fails and `run_ready_together` can go.
    async with trio_asyncio.open_loop() as loop:
        await _settled(loop)
        seen = await _passes_seen(loop, 5)
    assert len(set(seen)) > 1, seen


async def test_a_callback_that_keeps_queueing_itself_leaves_trio_its_turns():
    # A pass runs what was queued when it began: the callback queued by the last of those
    # waits for the next pass. Taking it too would never end the pass.
    ceiling = 10_000
    runs = 0
    async with trio_asyncio.open_loop() as loop:
        run_ready_together(loop)
        await _settled(loop)

        def again() -> None:
            nonlocal runs
            runs += 1
            if runs < ceiling:
                loop.call_soon(again)

        loop.call_soon(again)
        for _ in range(10):
            await trio.lowlevel.checkpoint()
        assert 0 < runs <= 2 * 10 + 2
        runs = ceiling  # stops it


async def test_callbacks_queued_before_the_loop_stops_all_run():
    ran: list[int] = []
    async with trio_asyncio.open_loop() as loop:
        as_asyncio_runs(loop)
        await _settled(loop)
        for n in range(100):
            loop.call_soon(ran.append, n)
    assert ran == list(range(100))
