"""When the webhook dispatcher looks for due events again after a look that found none.

Looking costs a database round trip, so it is done when there is reason to: at once when rung
(a commit that may have queued events: dispatcher.py says which), when the soonest known retry
or lease comes due, and otherwise every `poll` seconds for what nothing rang for (another
daemon's events); never sooner than `spacing` after the look before, so a stream of commits
that each queue an event costs at most one look per `spacing`, not one per commit.
"""

from __future__ import annotations

import math

import trio


class Doorbell:
    def __init__(self, *, spacing: float, poll: float) -> None:
        self._spacing = spacing
        self._poll = poll
        self._rung = trio.Event()

    def ring(self) -> None:
        """Events may be due. Kept until the next wait, so a ring during a look is not lost."""
        self._rung.set()

    async def wait(self, due_in: float | None) -> None:
        """Return when the next look should start, after a look that found nothing due and
        said the soonest may be in `due_in` seconds (None: nothing is pending; negative: due
        already, yet taken by another daemon's look)."""
        earliest = trio.current_time() + self._spacing
        with trio.move_on_after(min(self._poll, math.inf if due_in is None else max(0.0, due_in))):
            await self._rung.wait()
        await trio.sleep_until(earliest)
        # Rings until now are answered by the look that follows (their commits came first);
        # one from now on is kept for the next wait.
        self._rung = trio.Event()
