"""Exponential backoff shared by every sender of one emitter. Pure: callers pass `now`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

BASE_DEFAULT: Final = 0.2  # seconds, the first pause
CAP_DEFAULT: Final = 10.0  # seconds, the longest pause
_MAX_DOUBLINGS: Final = 32  # 2**32 times any sane base is past any cap


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The pause after `attempt` consecutive failures (0 for the first): the exponential step
    `min(cap, base·2^attempt)`, half fixed and half random ("equal jitter"), so a fleet that
    lost the daemon together does not come back in lockstep, yet never retries at once."""
    step = min(cap, base * 2 ** min(attempt, _MAX_DOUBLINGS))
    return step / 2 + rng.uniform(0, step / 2)


@dataclass
class Backoff:
    """When sending may resume after the daemon failed to answer.

    Senders note `generation` before a call and pass it to `failed`. Only a failure of a call
    started in the current generation opens a new, longer pause: many calls that fail together
    (a daemon going down under load) count as one failure, not as a hundred doublings.
    """

    rng: random.Random
    base: float = BASE_DEFAULT
    cap: float = CAP_DEFAULT
    attempt: int = 0
    generation: int = 0
    ready_at: float = field(default=-math.inf)

    def failed(self, generation: int, now: float) -> float | None:
        """Record a failure; returns the new pause, or None when the failure is already
        covered by the current one."""
        if generation != self.generation:
            return None
        delay = backoff_delay(self.attempt, self.base, self.cap, self.rng)
        self.attempt += 1
        self.generation += 1
        self.ready_at = now + delay
        return delay

    def succeeded(self) -> bool:
        """Record an answer; returns True when this ends a run of failures."""
        recovered = self.attempt > 0
        self.attempt = 0
        return recovered
