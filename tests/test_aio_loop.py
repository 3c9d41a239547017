"""asyncio's loop policies on trio-asyncio's loop (droneshield/aio_loop.py): callbacks ready
together run in one pass of trio's scheduler, at most TURN_MAX after the first, and none
queued after the pass began but by the first; cancelled timers leave
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
    TURN_MAX,
    open_loop,
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
    async with open_loop() as loop:
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
    async with open_loop() as loop:
        handles = [loop.call_later(DEADLINE, fired.append, n) for n in range(CALLS)]
        await trio.testing.wait_all_tasks_blocked()
    assert all(h.cancelled() for h in handles)
    assert fired == []


async def _settled(loop: trio_asyncio.TrioEventLoop) -> None:
    """Returns once the loop has run a callback queued now: a policy given to it meanwhile is
    then in force (the pass that was waiting when it was given took that callback)."""
    ran = trio.Event()
    loop.call_soon(ran.set)
    await ran.wait()


async def _callbacks_per_pass(loop: trio_asyncio.TrioEventLoop, callbacks: int) -> list[int]:
    """How many of `callbacks` callbacks, queued together, each of the loop's passes ran."""
    ran: list[None] = []
    per_pass: list[int] = []
    turn = loop._main_loop_one

    async def counted(no_wait: bool = False) -> None:
        before = len(ran)
        await turn(no_wait)
        if len(ran) > before:
            per_pass.append(len(ran) - before)

    loop._main_loop_one = counted
    await _settled(loop)
    for _ in range(callbacks):
        loop.call_soon(ran.append, None)
    with trio.fail_after(5):
        while len(ran) < callbacks:
            await trio.lowlevel.checkpoint()
    return per_pass


async def test_callbacks_ready_together_run_in_one_pass():
    async with trio_asyncio.open_loop() as loop:
        run_ready_together(loop)
        assert await _callbacks_per_pass(loop, 5) == [5]


async def test_without_the_policy_trio_asyncio_runs_one_callback_a_pass():
    # The behaviour the policy works around; if trio-asyncio ever runs them together itself,
    # this fails and `run_ready_together` can go.
    async with trio_asyncio.open_loop() as loop:
        assert await _callbacks_per_pass(loop, 5) == [1] * 5


async def test_a_callback_that_keeps_queueing_itself_leaves_trio_its_turns():
    # A pass runs the callback it waited for and what was queued by then (here the callback
    # that one queued): the callback queued by the last of those waits for the next pass.
    # Taking it too would never end the pass.
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


async def test_a_timer_that_keeps_rearming_itself_due_leaves_trio_its_turns():
    # trio-asyncio runs a due timer without a checkpoint; a pass that began with one and then
    # took the timer it re-armed would never have yielded.
    ceiling = 10_000
    runs = 0
    async with open_loop() as loop:
        await _settled(loop)

        def again() -> None:
            nonlocal runs
            runs += 1
            if runs < ceiling:
                loop.call_later(0, again)

        loop.call_later(0, again)
        for _ in range(10):
            await trio.lowlevel.checkpoint()
        assert 0 < runs < 100, runs
        runs = ceiling  # stops it


async def test_a_pass_runs_at_most_turn_max_callbacks_after_the_first():
    async with open_loop() as loop:
        assert await _callbacks_per_pass(loop, 3 * TURN_MAX) == [TURN_MAX + 1] * 2 + [TURN_MAX - 2]


async def test_given_twice_the_policy_applies_once():
    async with open_loop() as loop:
        run_ready_together(loop)
        assert max(await _callbacks_per_pass(loop, 3 * TURN_MAX)) == TURN_MAX + 1


async def test_callbacks_and_trio_calls_queued_before_the_loop_stops_all_run_once_in_order():
    ran: list[object] = []

    async def from_trio(n: int) -> None:
        ran.append(("trio", n))

    def queue_more(n: int) -> None:
        ran.append(n)
        if n % 10 == 0:
            loop.call_soon(ran.append, ("after", n))

    async with open_loop() as loop:
        await _settled(loop)
        futures = []
        for n in range(100):
            loop.call_soon(queue_more, n)
            if n == 50:
                futures.append(loop.trio_as_future(from_trio, n))
                loop.stop()
        loop.call_soon(ran.append, "last")
    assert [r for r in ran if isinstance(r, int)] == list(range(100))
    assert [r for r in ran if isinstance(r, tuple) and r[0] == "after"] == [
        ("after", n) for n in range(0, 100, 10)
    ]
    assert ran.count(("trio", 50)) == 1
    assert ran.count("last") == 1
    assert all(f.done() for f in futures)
