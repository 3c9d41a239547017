"""Workload 5, offline detection: how late after `offline_after` a silent sensor is marked
offline, when a whole fleet falls silent at once.

Every sensor reports once (batches of BATCH over gRPC from a load process, as fast as the
daemon acks them), then nobody reports again. Once all are offline, lateness is read from the
database per sensor: `status_changed_at - (last_seen_at + offline_after)`, both stamped by
PostgreSQL's clock (the commit of the report, the expiry's update). It includes the timing
wheel's rounding up to its resolution (the default), the writer learning of the commit,
and the expiry statements' own time.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import trio

from droneshield.config import WHEEL_RESOLUTION_DEFAULT
from droneshield.db import seed
from droneshield.db.pool import connect
from tests.support.grpc_clients import grpclib_stub
from tests.support.releases import add_software

from . import load
from .support import Bench, Result, percentiles, postgres_cpu_seconds, print_table, run_client

SENSORS: Final = 100_000
SENSORS_QUICK: Final = 10_000
OFFLINE_AFTER: Final = 5.0  # seconds: short, so the wait is short
BATCH: Final = 1_000  # reports per SendStatusBatch
CONCURRENCY: Final = 4  # calls in flight
GOAL_P99: Final = 1000.0  # ms late at most
# Seconds between counts of the sensors still online: each reads every online row, work
# PostgreSQL did beside the expiry it measures (at 0.2 s, p99 2.2-4.4 s against 1.8-2.6 s).
POLL: Final = 1.0
WAIT_MAX: Final = 120.0  # seconds for the fleet to go offline after the reports


async def _report_all(grpc_port: int, count: int) -> dict[str, Any]:
    """Load process: every sensor DS-1 … DS-count reports once."""
    serials = [seed.serial_for(n) for n in range(1, count + 1)]
    batches = [[(s, "1.0.0") for s in serials[i : i + BATCH]] for i in range(0, count, BATCH)]
    async with grpclib_stub(grpc_port) as stub:
        began = trio.current_time()
        await load.flood(stub, batches, CONCURRENCY)
        return {"seconds": trio.current_time() - began}


LATENESS = """
SELECT extract(epoch FROM status_changed_at - last_seen_at) - $2 AS late,
       extract(epoch FROM status_changed_at) AS at
FROM sensor
WHERE last_seen_at >= $1 AND NOT online
"""


async def run(bench: Bench) -> list[Result]:
    count = bench.scaled(SENSORS, SENSORS_QUICK)
    # A fleet that has never reported: nothing is overdue before the reports come in.
    async with bench.database() as url:
        async with connect(url) as conn:
            await seed.seed(conn, count)
            await add_software(conn, "1.0.0")
        # Autovacuum of the rows just seeded ran beside the expiry otherwise: lateness p99
        # 0.37-1.06 s in consecutive runs.
        await bench.settle(url)
        return await _measure(bench, url, count)


async def _measure(bench: Bench, url: str, count: int) -> list[Result]:
    async with bench.daemon(url, offline_after=OFFLINE_AFTER) as daemon, connect(url) as conn:
        began = await conn.fetchval("SELECT now()")
        cpu = daemon.cpu_seconds(), postgres_cpu_seconds()
        sent = await run_client(__name__, daemon.grpc_port, count)
        with trio.fail_after(WAIT_MAX):
            while await conn.fetchval(  # noqa: ASYNC110 (only the database can tell)
                "SELECT count(*) FROM sensor WHERE online"
            ):
                await trio.sleep(POLL)
        daemon_cpu, postgres_cpu = daemon.cpu_seconds() - cpu[0], postgres_cpu_seconds() - cpu[1]
        rows = await conn.fetch(LATENESS, began, OFFLINE_AFTER)
        rss = daemon.rss_mb()
    if len(rows) != count:
        raise RuntimeError(f"{len(rows)} of {count} reported sensors went offline")
    late = sorted(float(r["late"]) for r in rows)
    at = [float(r["at"]) for r in rows]
    rate = count / (max(at) - min(at))
    p50, p95, p99 = percentiles(late)
    print_table(
        "5. presence: offline detection lateness",
        f"{count:,} sensors each report once ({count // BATCH} batches of {BATCH:,}, "
        f"{CONCURRENCY} in flight), then fall silent; offline_after {OFFLINE_AFTER:g} s, wheel "
        f"resolution {WHEEL_RESOLUTION_DEFAULT:g} s; lateness = status_changed_at - "
        "(last_seen_at + offline_after), by PostgreSQL's clock; CPU s: the daemon's and "
        "PostgreSQL's, from the first report until every sensor is offline (the polls included)",
        [
            "sensors",
            "reports/s",
            "offline/s",
            "min ms",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "daemon CPU s",
            "PG CPU s",
        ],
        [
            (
                count,
                count / sent["seconds"],
                rate,
                late[0] * 1000,
                p50,
                p95,
                p99,
                late[-1] * 1000,
                daemon_cpu,
                postgres_cpu,
            )
        ],
    )
    return [
        Result(
            "5. offline lateness",
            rate,
            "offline/s",
            p50,
            p95,
            p99,
            rss,
            goal=f"p99 ≤ {GOAL_P99:,.0f} ms late",
            met=p99 <= GOAL_P99,
            note=f"{count:,} sensors silent at once; earliest {late[0] * 1000:.0f} ms",
        )
    ]


if __name__ == "__main__":
    load.main(_report_all, int(sys.argv[1]), int(sys.argv[2]))
