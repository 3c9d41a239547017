"""Python's garbage collector, set for a daemon whose heap is mostly long-lived.

A full (generation 2) collection walks every tracked object: at a million sensors that is the
wheel's slot lists, the pool's and the hub's structures, everything start-up built. py-spy saw
such passes take 60 to 100 ms, and a call that arrives during one waits for it: the ack latency's
tail at light load. `settle()` collects once and freezes what exists (`gc.freeze`: moved to a
permanent generation no collection walks), so later full passes walk only what was allocated
since; it runs when the daemon is ready and again when presence recovery has built the wheel.
The young generation's threshold is raised so what still reaches the collector is walked in
fewer, still short, passes. A call itself leaves nothing for it (reference counting frees each
call's grpclib stream: `ingest.limits`) and cancelled asyncio timers leave the loop at once
(`aio_loop`); with either back, young passes came every few hundred calls, 7 to 27 ms each
on a loaded machine. Frozen objects are never freed by the collector even
if they become cyclic garbage; reference counting still frees the rest, and start-up's
structures live as long as the process anyway.

Every pass's duration is observed in `droneshield_gc_pause_seconds` (by generation).
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

from . import metrics

MIDDLE_THRESHOLD: Final = 10  # young collections per middle one (Python's default)
OLD_THRESHOLD: Final = 100  # middle collections per full one (10): the full pass is the long one

_started: list[float] = []
# Resolved once: `labels()` takes a lock and allocates; the callback only adds to floats.
_PAUSES: Final = [metrics.GC_PAUSE_SECONDS.labels(str(generation)) for generation in range(3)]


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        pause = time.perf_counter() - _started.pop()
        _PAUSES[info["generation"]].observe(pause)


def tune(young_threshold: int) -> None:
    """Set the thresholds (0: leave Python's defaults and never freeze) and observe pauses."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
    if young_threshold:
        gc.set_threshold(young_threshold, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def settle(young_threshold: int) -> None:
    """Collect, then freeze what is left: start-up's long-lived objects leave the collector's
    walks. Costs one full pass (at start-up, not on a call's path). No-op when tuning is off."""
    if young_threshold:
        gc.collect()
        gc.freeze()


def release() -> None:
    """Give frozen objects back to the collector: the daemon has stopped (in tests, the next
    daemon of the same process should not inherit the last one's heap as permanent)."""
    gc.unfreeze()
