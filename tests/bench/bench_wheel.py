"""The presence timing wheel at a million sensors, on one core: memory per tracked sensor, re-arm
and expiry rates, and the per-call latencies the tracker's loop and the writer's sink see.

Pure CPU (no database, no event loop): time is simulated tick by tick, as the tracker would
call the wheel, so the numbers are the wheel's own cost. Runs in the runner's process: there is
no daemon to measure.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

from droneshield.wheel import TimingWheel

from .support import Bench, Result, percentiles, print_table

SENSORS = 1_000_000
QUICK_SENSORS = 100_000
OFFLINE_AFTER = 30.0  # seconds (the default)
RESOLUTION = 1.0  # seconds per slot (ticks are simulated a second at a time)
HEARTBEAT = 10  # seconds between a sensor's reports (the emitter's default)
BATCH = 2_000  # ids per re-arm call (the writer's default batch)
SIMULATED = 60  # seconds of steady heartbeats


def _track_all(wheel: TimingWheel, sensors: int) -> None:
    """Every sensor reported once in the last heartbeat period, in writer batches, in the
    order `_heartbeats` has them report."""
    batches = sensors // BATCH
    for b in range(batches):
        ids = range(b * BATCH + 1, (b + 1) * BATCH + 1)
        wheel.arm_many(ids, OFFLINE_AFTER - HEARTBEAT + HEARTBEAT * b / batches)


def _heartbeats(
    wheel: TimingWheel, sensors: int, on_arm: Callable[[float], None]
) -> tuple[int, list[float]]:
    """`SIMULATED` seconds of every sensor reporting each `HEARTBEAT` s, expiring each tick.
    Returns (re-arms, seconds each tick's `expired` call took)."""
    per_tick = sensors // HEARTBEAT
    rearms, sifts = 0, []
    for second in range(1, SIMULATED + 1):
        first = (second % HEARTBEAT) * per_tick
        for start in range(first, first + per_tick, BATCH):
            ids = range(start + 1, start + BATCH + 1)
            began = time.perf_counter()
            wheel.arm_many(ids, second + OFFLINE_AFTER)
            on_arm(time.perf_counter() - began)
            rearms += BATCH
        began = time.perf_counter()
        expired = sum(len(b) for b in wheel.expired(float(second)))
        if second > OFFLINE_AFTER:  # steady state: every slot holds re-armed sensors
            sifts.append(time.perf_counter() - began)
        assert expired == 0, "a reporting sensor expired"
    return rearms, sifts


def _memory(sensors: int) -> float:
    """Bytes per tracked sensor after a revolution of heartbeats (ids included: the wheel keeps
    the int objects the database driver created alive)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        wheel = TimingWheel(RESOLUTION, OFFLINE_AFTER, now=0.0)
        _track_all(wheel, sensors)
        _heartbeats(wheel, sensors, lambda _: None)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(wheel) == sensors
    return used / sensors


async def run(bench: Bench) -> list[Result]:
    sensors = bench.scaled(SENSORS, QUICK_SENSORS)
    wheel = TimingWheel(RESOLUTION, OFFLINE_AFTER, now=0.0)
    _track_all(wheel, sensors)
    arm_latencies: list[float] = []
    rearms, sifts = _heartbeats(wheel, sensors, arm_latencies.append)

    # Everyone falls silent: they expire tick by tick over the next OFFLINE_AFTER seconds.
    ticks = []
    expired = 0
    for second in range(SIMULATED + 1, SIMULATED + int(OFFLINE_AFTER) + 2):
        began = time.perf_counter()
        count = sum(len(b) for b in wheel.expired(float(second)))
        if count:
            ticks.append(time.perf_counter() - began)
            expired += count
    assert expired == sensors

    # A daemon that was not polled for a whole revolution: everything due in one call.
    _track_all(wheel, sensors)
    began = time.perf_counter()
    at_once = sum(len(b) for b in wheel.expired(10 * OFFLINE_AFTER))
    catch_up = time.perf_counter() - began
    assert at_once == sensors

    per_tick = sensors // HEARTBEAT
    rows = [
        (
            f"re-arm, batches of {BATCH:,}",
            int(rearms / sum(arm_latencies)),
            *percentiles(arm_latencies),
        ),
        (
            f"tick while {per_tick:,} re-arms/s, none due: "
            f"{sum(sifts) / len(sifts):.1%} of a core re-filing",
            "",
            *percentiles(sifts),
        ),
        (
            f"expiry, tick by tick ({per_tick:,} a tick)",
            int(expired / sum(ticks)),
            *percentiles(ticks),
        ),
        ("expiry, all overdue in one call", int(at_once / catch_up), catch_up * 1000, "", ""),
    ]
    print_table(
        "timing wheel, one core",
        f"{sensors:,} tracked; {SIMULATED} s of reports every {HEARTBEAT} s "
        f"({rearms:,} re-arms), then all silent; latency per call",
        ["operation", "rate /s", "p50 ms", "p95 ms", "p99 ms"],
        rows,
    )
    per_sensor = _memory(sensors)
    print_table(
        "timing wheel, memory",
        "traced Python allocations after a revolution of heartbeats, divided by sensors",
        ["sensors", "bytes per tracked sensor"],
        [(f"{sensors:,}", per_sensor)],
    )
    re_arm = rows[0]
    expiry = rows[2]
    return [
        Result(
            f"10. wheel: re-arm ({sensors:,} tracked)",
            re_arm[1],
            "re-arms/s",
            *re_arm[2:],
            goal=f"{per_sensor:.0f} B/sensor (< 200)",
            met=per_sensor < 200,
        ),
        Result(f"10. wheel: expiry ({sensors:,})", expiry[1], "expiries/s", *expiry[2:]),
    ]
