"""Workload 8, getting a fleet in and a daemon up: seeding the fleet with COPY into an empty
database, then starting a daemon against a fleet that is mostly online. The daemon is ready
before it has rebuilt its presence wheel (recovery runs in the background); both times are shown.
"""

from __future__ import annotations

import time
from typing import Final

import trio

from droneshield.db import seed
from droneshield.db.pool import connect

from .support import READY_TIMEOUT, Bench, Result, print_table

SEED_GOAL_FLEET = 1_000_000  # the seeding and start-up goals are set for a million sensors
READY_GOAL: Final = 2.0  # seconds from spawn to ready, whatever the fleet


async def run(bench: Bench) -> list[Result]:
    fleet = bench.fleet
    async with bench.database() as url, connect(url) as conn:
        began = time.perf_counter()
        created = await seed.seed(conn, fleet)
        seeding = time.perf_counter() - began
    assert created == fleet
    url = await bench.seeded(fleet)
    async with connect(url) as conn:
        online = await conn.fetchval("SELECT count(*) FROM sensor WHERE online")
    async with bench.daemon(url, log_level="INFO") as daemon:
        ready = daemon.ready_after
        waited = time.perf_counter()
        with trio.fail_after(READY_TIMEOUT):
            await daemon.spawned.wait_for("presence recovered")
        recovered = ready + time.perf_counter() - waited  # at most: the line may be older
        rss = daemon.rss_mb()
    print_table(
        "8. seeding and start-up",
        f"seed: {fleet:,} sensors by COPY into an empty migrated database; start-up: "
        f"`droneshield serve` as a process against {online:,} online sensors, spawn to the "
        "first 200 from /readyz (interpreter start included), and to the wheel's recovery",
        ["step", "seconds", "per second", "RSS MB"],
        [
            ("seed", seeding, fleet / seeding, None),
            ("start-up to ready", ready, None, None),
            ("start-up to wheel recovered", recovered, online / recovered, rss),
        ],
    )
    return [
        Result(
            f"8. seed {fleet:,} sensors",
            fleet / seeding,
            "sensors/s",
            goal=f"{seeding:.1f} s (< 10 s at 1M)",
            met=seeding < 10 if fleet >= SEED_GOAL_FLEET else None,
        ),
        Result(
            f"8. start-up with {online:,} online",
            online / recovered,
            "recovered/s",
            rss_mb=rss,
            goal=f"ready in {ready:.1f} s (< {READY_GOAL:.0f} s at 1M), wheel in {recovered:.1f} s",
            met=ready < READY_GOAL if online >= SEED_GOAL_FLEET * 0.9 else None,
        ),
    ]
