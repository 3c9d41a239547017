"""Workload 6, GET /sensors at fleet size: the first page, a page in the middle, the last page,
a cursor in the middle, and the first page of every sort and order with each filter and search
(one matching the whole fleet, one matching nothing, one in the middle of serials). One request
in flight from a separate process (httpx), so the latency is the daemon's and the database's,
not a queue's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Final

import httpx

from .support import Bench, Result, cpu_seconds, percentiles, print_table, run_client

LIMIT: Final = 50  # the dashboard's page size
REQUESTS: Final = 200  # per query, unless the budget runs out first
QUICK_REQUESTS: Final = 30
BUDGET: Final = 3.0  # seconds per query at most (OFFSET pages are slow by nature)
SORTS: Final = ("serial", "status_changed_at", "last_seen_at", "version")
FILTERS: Final = {
    "": "",
    "status=online": "&status=online",
    "status=offline": "&status=offline",
    "status=never": "&status=never",
    "version=1.10.0": "&version=1.10.0",
    "site=site-042": "&site=site-042",
    "q=ds- (all)": "&q=ds-",
    "q=zz9 (none)": "&q=zz9",
    "q=0099": "&q=0099",
}
MIN_REQUESTS: Final = 20


def _queries(fleet: int) -> dict[str, str]:
    pages = -(-fleet // LIMIT)
    base = f"/sensors?limit={LIMIT}"
    return {
        "first page": base,
        f"page {pages // 2:,} (middle)": f"{base}&page={pages // 2}",
        f"page {pages:,} (last)": f"{base}&page={pages}",
        "cursor, middle": f"{base}&cursor={{middle}}",
        "status=online": f"{base}&status=online",
        "status=offline": f"{base}&status=offline",
        "status=never": f"{base}&status=never",
        "version=1.0.0": f"{base}&version=1.0.0",
        "q=DS-0005 (prefix)": f"{base}&q=DS-0005",
        "status=offline, cursor middle": f"{base}&status=offline&cursor={{middle}}",
        **{
            f"sort={sort} {order}{' ' + name if name else ''}": (
                f"{base}&sort={sort}&order={order}{params}"
            )
            for sort in SORTS
            for order in ("asc", "desc")
            for name, params in FILTERS.items()
            # The ascending serial listings of status and version are the rows above.
            if (sort, order) != ("serial", "asc") or name.startswith(("q=", "site"))
        },
    }


async def run(bench: Bench) -> list[Result]:
    url = await bench.seeded(bench.fleet)
    requests = bench.scaled(REQUESTS, QUICK_REQUESTS)
    async with bench.daemon(url, offline_after=3600) as daemon:
        reply = await run_client(__name__, daemon.http_port, daemon.pid, bench.fleet, requests)
        rss = daemon.rss_mb()
    rows, results = [], []
    for name, (latencies, cpu) in reply.items():
        p50, p95, p99 = percentiles(latencies)
        rate = len(latencies) / sum(latencies)
        rows.append((name, len(latencies), rate, p50, p95, p99, cpu / len(latencies) * 1000))
        results.append(
            Result(
                f"6. GET /sensors {name}",
                rate,
                "req/s",
                p50,
                p95,
                p99,
                rss,
                goal="p99 < 20 ms",
                met=p99 < 20,
            )
        )
    print_table(
        f"6. GET /sensors at {bench.fleet:,} sensors",
        f"limit={LIMIT}; up to {requests} requests per query (at most {BUDGET:.0f} s), one "
        "in flight, from a separate process; CPU = the daemon's CPU per request",
        ["query", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/req"],
        rows,
    )
    return results


async def _load(
    port: int, pid: int, fleet: int, requests: int
) -> dict[str, tuple[list[float], float]]:
    """Per query: the latencies, and the daemon's CPU seconds over them."""
    out: dict[str, tuple[list[float], float]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        pages = -(-fleet // LIMIT)
        middle = (await client.get(f"/sensors?limit={LIMIT}&page={pages // 2}")).json()
        for name, path in _queries(fleet).items():
            path = path.format(middle=middle["nextCursor"])
            latencies: list[float] = []
            cpu = cpu_seconds(pid)
            until = time.perf_counter() + BUDGET
            while len(latencies) < requests and (
                time.perf_counter() < until or len(latencies) < MIN_REQUESTS
            ):
                began = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - began)
                response.raise_for_status()
                if not response.json()["items"] and not ("never" in name or "none" in name):
                    raise RuntimeError(f"{path}: no sensors")
            out[name] = (latencies, cpu_seconds(pid) - cpu)
    return out


if __name__ == "__main__":
    port, pid, fleet, requests = map(int, sys.argv[1:])
    print(json.dumps(asyncio.run(_load(port, pid, fleet, requests))))
