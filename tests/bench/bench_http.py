"""Workload 6, GET /sensors at fleet size: the first page, a page in the middle, the last page,
a cursor in the middle, and the first page of every sort and order with each filter and search
(one matching the whole fleet, one matching nothing, one in the middle of serials). One request
in flight from a separate process (httpx), so the latency is the daemon's and the database's,
not a queue's.

Beside them, the daemon's CPU per first page against a bare Quart-Trio route on hypercorn
(`bare_http`) answering the same bytes: same client, one in flight, the same number of
requests, in alternating rounds so that a change in the machine's load falls on both.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Final

import httpx
import trio

from tests.support import plain_asyncio
from tests.support.processes import free_port, spawn

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
CPU_REQUESTS: Final = 2000  # per server in the CPU comparison (a clock tick is 10 ms)
QUICK_CPU_REQUESTS: Final = 500
CPU_ROUNDS: Final = 10
CPU_GOAL: Final = 1.5  # the daemon's CPU per page at most this many times the bare route's


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
    await bench.restore(url)
    requests = bench.scaled(REQUESTS, QUICK_REQUESTS)
    online = await bench.online(url)
    async with bench.daemon(url, offline_after=3600) as daemon:
        await daemon.recovered(online)
        reply = await run_client(__name__, daemon.http_port, daemon.pid, bench.fleet, requests)
        rss = daemon.rss_mb()
        versus_bare = await _versus_bare(bench, daemon.http_port, daemon.pid)
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
    return [*results, versus_bare]


async def _versus_bare(bench: Bench, port: int, pid: int) -> Result:
    """The daemon's CPU per first page against the bare route's for the same bytes."""
    path = f"/sensors?limit={LIMIT}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        page = await client.get(path)
    page.raise_for_status()
    requests = bench.scaled(CPU_REQUESTS, QUICK_CPU_REQUESTS)
    with tempfile.NamedTemporaryFile(prefix="droneshield-bench-page-") as body:
        await trio.Path(body.name).write_bytes(page.content)
        bare_port = free_port()
        argv = [sys.executable, "-m", "tests.bench.bare_http", str(bare_port), body.name]
        async with spawn([*argv, page.headers["content-type"]]) as bare:
            await bare.wait_for("ready")
            args = (port, pid, bare_port, bare.process.pid, path, requests)
            daemon_cpu, bare_cpu = await run_client(__name__, "cpu", *args)
    ratio = daemon_cpu / bare_cpu
    print_table(
        "6. GET /sensors first page: CPU against a bare Quart-Trio route",
        f"limit={LIMIT}; {requests} requests each, one in flight, in {CPU_ROUNDS} alternating "
        f"rounds, from a separate process; the bare route answers the same {len(page.content):,}"
        " bytes",
        ["server", "requests", "CPU ms/req"],
        [
            ("daemon", requests, daemon_cpu / requests * 1000),
            ("bare Quart-Trio on hypercorn", requests, bare_cpu / requests * 1000),
        ],
    )
    return Result(
        "6. GET /sensors first page, CPU vs bare Quart-Trio",
        ratio,
        "x bare",
        goal=f"<= {CPU_GOAL}x bare",
        met=ratio <= CPU_GOAL,
        note=f"{daemon_cpu / requests * 1000:.2f} vs {bare_cpu / requests * 1000:.2f} CPU ms/req",
    )


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


async def _cpu(
    port: int, pid: int, bare_port: int, bare_pid: int, path: str, requests: int
) -> tuple[float, float]:
    """CPU seconds of the daemon and of the bare route over `requests` each of `path`, one in
    flight, in alternating rounds; every bare answer checked against the daemon's bytes."""
    spent = [0.0, 0.0]
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as daemon,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{bare_port}", timeout=60) as bare,
    ):
        expected = (await daemon.get(path)).content
        for round_ in range(CPU_ROUNDS):
            count = requests * (round_ + 1) // CPU_ROUNDS - requests * round_ // CPU_ROUNDS
            for index, (client, server) in enumerate(((daemon, pid), (bare, bare_pid))):
                before = cpu_seconds(server)
                for _ in range(count):
                    response = await client.get(path)
                    response.raise_for_status()
                    if index and response.content != expected:
                        raise RuntimeError("the bare route answered other bytes")
                spent[index] += cpu_seconds(server) - before
    return spent[0], spent[1]


if __name__ == "__main__":
    if sys.argv[1] == "cpu":
        port, pid, bare_port, bare_pid = map(int, sys.argv[2:6])
        path, requests = sys.argv[6], int(sys.argv[7])
        print(json.dumps(plain_asyncio.run(_cpu(port, pid, bare_port, bare_pid, path, requests))))
    else:
        port, pid, fleet, requests = map(int, sys.argv[1:])
        print(json.dumps(plain_asyncio.run(_load(port, pid, fleet, requests))))
