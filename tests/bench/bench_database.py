"""Workload 1, the database's own limit: the writer's group-commit statement
(`droneshield.db.reports`) driven straight from asyncpg, with no daemon in between. Every other
ingest figure is read against this one.

Each connection loops: pick a batch of distinct random serials from the fleet, sort them (as the
writer does, so concurrent batches lock rows in one order), apply them as heartbeats of the
already-stored version in one transaction. Steady state for a fleet: most sensors are online
already, so most rows change only `last_seen_at` (a HOT update). The share of HOT updates is
read from `pg_stat_user_tables` around each run: no index may cover what a heartbeat changes.
A last row reports a version never uploaded, so every statement also adds to the
`unreleased_version` aggregate: what sensors on unreleased software cost.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import asyncpg

from droneshield.config import BATCH_MAX_DEFAULT
from droneshield.db import reports, seed
from tests.support import plain_asyncio

from .support import Bench, Result, percentiles, print_table, run_client

CONNECTIONS = (1, 4)
UNRELEASED = "4.0.0"  # never uploaded in the benchmark's fleet
SECONDS = 15.0
QUICK_SECONDS = 2.0


async def run(bench: Bench) -> list[Result]:
    url = await bench.seeded(bench.fleet)
    seconds = QUICK_SECONDS if bench.quick else SECONDS
    rows, results = [], []
    for connections, version in [*((c, "stored") for c in CONNECTIONS), (1, UNRELEASED)]:
        rate, latencies, hot = await run_client(
            __name__, url, bench.fleet, connections, BATCH_MAX_DEFAULT, seconds, version
        )
        p50, p95, p99 = percentiles(latencies)
        what = f"{connections} conn." + (", unreleased version" if version == UNRELEASED else "")
        rows.append((what, rate, p50, p95, p99, f"{hot:.1%}"))
        if version != UNRELEASED:
            bench.figures[f"database_limit_{connections}"] = rate
        results.append(
            Result(
                f"1. database limit, {what}",
                rate,
                "reports/s",
                p50,
                p95,
                p99,
                note=f"latency per statement; {hot:.1%} HOT updates",
            )
        )
    print_table(
        "1. database limit: the group-commit statement from asyncpg",
        f"{bench.fleet:,} sensors; batches of {BATCH_MAX_DEFAULT:,} random heartbeats per "
        f"transaction; {seconds:.0f} s per row; latency per statement",
        ["run", "reports/s", "p50 ms", "p95 ms", "p99 ms", "HOT updates"],
        rows,
    )
    return results


async def _connection(
    url: str, fleet: int, batch: int, until: float, latencies: list[float], version: str
) -> int:
    conn = await asyncpg.connect(url)
    applied = 0
    try:
        while time.perf_counter() < until:
            numbers = sorted(random.sample(range(1, fleet + 1), batch))
            serials = [seed.serial_for(n) for n in numbers]
            # Each sensor reports the version it stores (Bench.seeded: 1.10.0 on every third),
            # unless the run is about an unreleased one.
            versions = [
                version if version == UNRELEASED else ("1.10.0" if n % 3 == 0 else "1.0.0")
                for n in numbers
            ]
            began = time.perf_counter()
            await reports.apply_reports(conn, serials, versions)
            latencies.append(time.perf_counter() - began)
            applied += batch
    finally:
        await conn.close()
    return applied


_UPDATES = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sensor'"


async def _updates(url: str) -> tuple[int, int]:
    """(updates, HOT updates) of `sensor` so far, once the statistics are flushed."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(1.5)  # other backends flush their counts at most once a second
        row = await conn.fetchrow(_UPDATES)
        return row[0], row[1]
    finally:
        await conn.close()


async def _load(
    url: str, fleet: int, connections: int, batch: int, seconds: float, version: str
) -> list:
    latencies: list[float] = []
    updated, hot = await _updates(url)
    began = time.perf_counter()
    counts = await asyncio.gather(
        *(
            _connection(url, fleet, batch, began + seconds, latencies, version)
            for _ in range(connections)
        )
    )
    rate = sum(counts) / (time.perf_counter() - began)
    updated_after, hot_after = await _updates(url)
    return [rate, latencies, (hot_after - hot) / max(updated_after - updated, 1)]


if __name__ == "__main__":
    url, fleet, connections, batch, seconds, version = sys.argv[1:]
    result = plain_asyncio.run(
        _load(url, int(fleet), int(connections), int(batch), float(seconds), version)
    )
    print(json.dumps(result))
