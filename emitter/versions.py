"""The software versions the simulated sensors run and how a sensor's version moves.

Pure functions over a `random.Random`, so a seed makes every run repeatable.
"""

from __future__ import annotations

import math
import random
from typing import Final

# The original simulator's versions, oldest first. `demo-uploads` uploads exactly these.
RELEASED: Final = ("1.0.0", "1.1.0", "2.0.1", "3.4.2")
# Fleet mode upgrades past the released versions to these, whose release files nobody uploaded
# yet: the daemon keeps such a sensor online but does not store the version.
UNRELEASED: Final = ("4.0.0",)
FLEET_LADDER: Final = RELEASED + UNRELEASED


def shown(version: str) -> str:
    """How sensors put a version on the wire: `1.0.0` → `v1.0.0`."""
    return f"v{version}"


def compat_next(current: str | None, rng: random.Random) -> str:
    """The original simulator's rule: a sensor's first report is v1.0.0, every later one is a
    random released version at or after the current one, so a sensor never goes backwards."""
    if current is None:
        return RELEASED[0]
    return rng.choice(RELEASED[RELEASED.index(current) :])


def fleet_initial(rng: random.Random) -> str:
    """A fleet sensor starts on any released version."""
    return rng.choice(RELEASED)


def upgrade_chance(interval: float, upgrade_every: float) -> float:
    """The chance that a sensor upgrades at one heartbeat, when upgrades arrive on average once
    every `upgrade_every` seconds of reporting (a Poisson process sampled every `interval`).
    `upgrade_every <= 0` turns upgrades off."""
    if upgrade_every <= 0:
        return 0.0
    return 1.0 - math.exp(-interval / upgrade_every)


def fleet_next(current: str, chance: float, rng: random.Random) -> str:
    """One rung up the fleet ladder with probability `chance`; the top rung stays."""
    rung = FLEET_LADDER.index(current)
    if rung + 1 < len(FLEET_LADDER) and rng.random() < chance:
        return FLEET_LADDER[rung + 1]
    return current
