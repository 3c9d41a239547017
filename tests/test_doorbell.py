"""When the webhook dispatcher looks again after finding nothing due, on MockClock: at once when
rung, at the soonest due time, at the latest after the poll, never sooner than the spacing."""

from __future__ import annotations

import pytest
import trio

from droneshield.doorbell import Doorbell

SPACING = 0.2
POLL = 10.0


async def test_unrung_it_waits_for_the_poll_or_an_earlier_due_time(autojump_clock):
    bell = Doorbell(spacing=SPACING, poll=POLL)
    start = trio.current_time()
    await bell.wait(None)
    assert trio.current_time() - start == pytest.approx(POLL)
    await bell.wait(3.0)
    assert trio.current_time() - start == pytest.approx(POLL + 3.0)
    await bell.wait(60.0)
    assert trio.current_time() - start == pytest.approx(2 * POLL + 3.0)
    await bell.wait(-1.0)  # due already (another daemon's look took it): the spacing
    assert trio.current_time() - start == pytest.approx(2 * POLL + 3.0 + SPACING)


async def test_an_idle_minute_costs_six_looks(autojump_clock):
    bell = Doorbell(spacing=SPACING, poll=POLL)
    looks = 0
    with trio.move_on_after(60.5):
        while True:
            await bell.wait(None)
            looks += 1
    assert looks == 6


async def test_a_ring_wakes_it_but_not_sooner_than_the_spacing(autojump_clock, nursery):
    bell = Doorbell(spacing=SPACING, poll=POLL)
    start = trio.current_time()
    nursery.start_soon(_ring_at, bell, 2.0)
    await bell.wait(None)
    assert trio.current_time() - start == pytest.approx(2.0)
    bell.ring()  # during the look that followed: not lost, and spaced
    await bell.wait(None)
    assert trio.current_time() - start == pytest.approx(2.0 + SPACING)


async def test_a_stream_of_rings_costs_one_look_per_spacing(autojump_clock, nursery):
    bell = Doorbell(spacing=SPACING, poll=POLL)

    async def ring_every_millisecond() -> None:
        while True:
            bell.ring()
            await trio.sleep(0.001)

    nursery.start_soon(ring_every_millisecond)
    looks = 0
    with trio.move_on_after(10.0 + SPACING / 2):
        while True:
            await bell.wait(None)
            looks += 1
    nursery.cancel_scope.cancel()
    assert looks == 50


async def _ring_at(bell: Doorbell, delay: float) -> None:
    await trio.sleep(delay)
    bell.ring()
