"""Workload 4, live updates: how long a report takes to reach the WebSocket clients watching its
sensor, with CLIENTS dashboards open.

Each client subscribes to a page of its own (PAGE serials, as the dashboard does). A load process
holds the clients and sends reports over gRPC at a steady RATE, SendStatusBatch every
1/BATCHES_PER_S s, open loop; every report carries its sensor's next release version, so each
one is a visible change the client can recognise. Latency per report: from just before its gRPC
call to the client's receipt of the `sensor` message naming that version, on the load process's
clock. It spans the group commit, the hub, the per-client coalescing (≤ 10 flushes/s) and the
WebSocket send. The second row sends the reports to one daemon and has the clients on another:
changes cross through PostgreSQL NOTIFY/LISTEN.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from typing import Any, Final

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from droneshield.db import seed
from droneshield.db.pool import connect
from droneshield.ingest.proto.status import DeviceStatusServiceStub
from tests.support.grpc_clients import grpclib_stub
from tests.support.live_client import open_live
from tests.support.releases import add_software

from . import load
from .support import Bench, Result, cpu_seconds, percentiles, print_table, run_client

CLIENTS: Final = 100
PAGE: Final = 50  # sensors each client watches
PAGE_QUICK: Final = 20
RATE: Final = 1_000  # reports per second
BATCHES_PER_S: Final = 20
SECONDS: Final = 15.0  # of load per row
SECONDS_QUICK: Final = 3.0
VERSIONS: Final = [f"1.0.{n}" for n in range(10)]  # uploaded; a sensor's reports cycle them
DRAIN: Final = 5.0  # seconds to wait after the last report for its change to arrive
GOAL_P99: Final = 250.0  # ms
PATHS: Final = ("clients on A", "clients on B (NOTIFY)")  # reports always go to daemon A
COMMIT_METRIC: Final = "droneshield_commit_seconds"
CONNECTING: Final = 20  # clients in their handshake at once


def _batches(count: int, first: int, reports: int) -> list[load.Pairs]:
    """Reports `first` … `first + reports - 1` of a sequence that goes round sensors DS-1 …
    DS-count, each report carrying its sensor's next version."""
    size = RATE // BATCHES_PER_S
    pairs = [
        (seed.serial_for(i % count + 1), VERSIONS[i // count % len(VERSIONS)])
        for i in range(first, first + reports)
    ]
    return [pairs[i : i + size] for i in range(0, reports, size)]


async def _commits(http_port: int) -> tuple[float, float]:
    """(seconds, count) of the group commits a daemon has made so far, from its /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{http_port}/metrics")).text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return values[COMMIT_METRIC + "_sum"], values[COMMIT_METRIC + "_count"]


async def _row(
    stub: DeviceStatusServiceStub,
    http_port: int,
    page: int,
    batches: list[load.Pairs],
    daemons: list[int],
    metrics_port: int,
) -> dict[str, Any]:
    """Open the clients, send `batches`, wait for their changes to arrive (up to DRAIN).
    Rates, the daemons' (pids) CPU% and the mean group commit time of the daemon the reports go
    to (its /metrics on `metrics_port`) are over the sending."""
    sent_at: dict[tuple[str, str], float] = {}  # (serial, "v1.0.n") → send time
    latencies: list[float] = []
    sending = True
    all_in = trio.Event()

    def stamp(pairs: load.Pairs) -> None:
        now = trio.current_time()
        for serial, version in pairs:
            sent_at[serial, "v" + version] = now

    async def watch(first: int, *, task_status: trio.TaskStatus[None]) -> None:
        serials = [seed.serial_for(n) for n in range(first, first + page)]
        async with open_live(http_port) as live:
            await live.subscribe(serials)
            task_status.started()
            while True:
                message = await live.next("sensor")
                now = trio.current_time()
                for item in message["sensors"]:
                    began = sent_at.pop((item["serial"], item["version"]), None)
                    if began is not None:
                        latencies.append(now - began)
                if not sending and not sent_at:
                    all_in.set()

    tally = load.Tally()
    async with trio.open_nursery() as nursery:
        await load.start_all(nursery, watch, [(1 + c * page,) for c in range(CLIENTS)], CONNECTING)
        cpu, began = [cpu_seconds(pid) for pid in daemons], trio.current_time()
        commits = await _commits(metrics_port)
        await load.paced(stub, batches, BATCHES_PER_S, tally, on_send=stamp)
        elapsed = trio.current_time() - began
        commits = [
            after - before
            for after, before in zip(await _commits(metrics_port), commits, strict=True)
        ]
        cpu = [(cpu_seconds(p) - c) / elapsed * 100 for p, c in zip(daemons, cpu, strict=True)]
        sending = False
        if not sent_at:
            all_in.set()
        with trio.move_on_after(DRAIN):
            await all_in.wait()
        nursery.cancel_scope.cancel()
    return {
        "reports": sum(len(b) for b in batches),
        "received": len(latencies),
        "unavailable": tally.unavailable,
        "rate": len(latencies) / elapsed,
        "latency": percentiles(latencies),
        "ack": percentiles(tally.latencies),
        "cpu": cpu,
        "commit": commits[0] / commits[1] * 1000,
    }


async def _live(
    grpc_port: int, pids: str, page: int, seconds: float, *http_ports: int
) -> list[dict[str, Any]]:
    """Load process: one row per port in `http_ports` (the clients' daemon), reports always to
    `grpc_port`; CPU% of each daemon in `pids` ("a,b")."""
    daemons = [int(pid) for pid in pids.split(",")]
    reports = int(RATE * seconds)
    async with grpclib_stub(grpc_port) as stub:
        return [
            await _row(
                stub,
                http_port,
                page,
                _batches(CLIENTS * page, n * reports, reports),
                daemons,
                http_ports[0],
            )
            for n, http_port in enumerate(http_ports)
        ]


async def run(bench: Bench) -> list[Result]:
    page = bench.scaled(PAGE, PAGE_QUICK)
    seconds = SECONDS_QUICK if bench.quick else SECONDS
    async with bench.database() as url, AsyncExitStack() as stack:
        async with connect(url) as conn:
            await seed.seed(conn, CLIENTS * page)
            await add_software(conn, *VERSIONS)
        # The NOTIFY row needs a second daemon: a few seconds to start, so only in full runs.
        daemons = [
            await stack.enter_async_context(bench.daemon(url))
            for _ in PATHS[: 1 + (not bench.quick)]
        ]
        out = await run_client(
            __name__,
            daemons[0].grpc_port,
            ",".join(str(d.pid) for d in daemons),
            page,
            seconds,
            *(d.http_port for d in daemons),
        )
        rss = [d.rss_mb() for d in daemons]
    rows = dict(zip(PATHS, out, strict=False))
    print_table(
        "4. live: report → WebSocket latency",
        f"{CLIENTS} WebSocket clients, each subscribed to {page} sensors of its own; reports "
        f"to daemon A at {RATE:,}/s in {BATCHES_PER_S} SendStatusBatch calls/s (open loop) for "
        f"{seconds:g} s, each a new version of its sensor; latency = gRPC call start → "
        "`sensor` message received, in one load process; with the clients on daemon B the "
        "changes cross PostgreSQL NOTIFY/LISTEN; CPU% of each daemon and daemon A's mean group "
        "commit time (its /metrics) while reports are sent",
        [
            "clients",
            "reports",
            "received",
            "changes/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "ack p99 ms",
            "commit mean ms",
            "CPU % A / B",
        ],
        [
            (
                name,
                r["reports"],
                r["received"],
                r["rate"],
                *r["latency"],
                r["ack"][2],
                r["commit"],
                " / ".join(f"{cpu:.0f}" for cpu in r["cpu"]),
            )
            for name, r in rows.items()
        ],
    )
    return [
        Result(
            f"4. report → WS, {name}",
            r["rate"],
            "changes/s",
            *r["latency"],
            rss_mb=rss[n],
            goal=f"p99 < {GOAL_P99:g} ms, {CLIENTS} clients",
            met=r["latency"][2] < GOAL_P99 and r["received"] == r["reports"],
            note=f"{r['reports'] - r['received']} changes not received "
            f"({r['unavailable']} reports UNAVAILABLE)",
        )
        for n, (name, r) in enumerate(rows.items())
    ]


if __name__ == "__main__":
    grpc_port, pids, page, seconds, *http_ports = sys.argv[1:]
    load.main(_live, int(grpc_port), pids, int(page), float(seconds), *map(int, http_ports))
