"""Workload 1, the database's own limit: the writer's group-commit statement
(`droneshield.db.reports`) driven straight from asyncpg, with no daemon in between. Every other
ingest figure is read against this one.

Each connection loops: pick a batch of distinct random serials from the fleet, sort them (as the
writer does, so concurrent batches lock rows in one order), apply them as heartbeats of the
already-stored version in one transaction. Steady state for a fleet: most sensors are online
already, so most rows change only `last_seen_at` (a HOT update).
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

from .support import Bench, Result, percentiles, print_table, run_client

CONNECTIONS = (1, 4)
SECONDS = 15.0
QUICK_SECONDS = 2.0


async def run(bench: Bench) -> list[Result]:
    url = await bench.seeded(bench.fleet)
    seconds = QUICK_SECONDS if bench.quick else SECONDS
    rows, results = [], []
    for connections in CONNECTIONS:
        rate, latencies = await run_client(
            __name__, url, bench.fleet, connections, BATCH_MAX_DEFAULT, seconds
        )
        p50, p95, p99 = percentiles(latencies)
        rows.append((connections, rate, p50, p95, p99))
        bench.figures[f"database_limit_{connections}"] = rate
        results.append(
            Result(
                f"1. database limit, {connections} conn.",
                rate,
                "reports/s",
                p50,
                p95,
                p99,
                note="latency per statement",
            )
        )
    print_table(
        "1. database limit: the group-commit statement from asyncpg",
        f"{bench.fleet:,} sensors; batches of {BATCH_MAX_DEFAULT:,} random heartbeats per "
        f"transaction; {seconds:.0f} s per row; latency per statement",
        ["connections", "reports/s", "p50 ms", "p95 ms", "p99 ms"],
        rows,
    )
    return results


async def _connection(
    url: str, fleet: int, batch: int, until: float, latencies: list[float]
) -> int:
    conn = await asyncpg.connect(url)
    applied = 0
    try:
        while time.perf_counter() < until:
            serials = sorted(seed.serial_for(n) for n in random.sample(range(1, fleet + 1), batch))
            began = time.perf_counter()
            await reports.apply_reports(conn, serials, ["1.0.0"] * batch)
            latencies.append(time.perf_counter() - began)
            applied += batch
    finally:
        await conn.close()
    return applied


async def _load(url: str, fleet: int, connections: int, batch: int, seconds: float) -> list:
    latencies: list[float] = []
    began = time.perf_counter()
    counts = await asyncio.gather(
        *(_connection(url, fleet, batch, began + seconds, latencies) for _ in range(connections))
    )
    return [sum(counts) / (time.perf_counter() - began), latencies]


if __name__ == "__main__":
    url, fleet, connections, batch, seconds = sys.argv[1:]
    result = asyncio.run(_load(url, int(fleet), int(connections), int(batch), float(seconds)))
    print(json.dumps(result))
