"""Workload 11, HAProxy's cost per call: unary `SendStatus` straight to a daemon and through
HAProxy with the shipped configuration (`deploy/haproxy/haproxy.cfg`), in the same run, closed
loop and paced. Both of HAProxy's servers point at the same daemon, so the only difference
between the rows is HAProxy itself: the added latency, and its own CPU per call (from /proc).
"""

from __future__ import annotations

from tests.support.balancer import HAPROXY, haproxy

from .bench_ingest import IN_FLIGHT, QUICK_SECONDS, SECONDS, measure
from .support import Bench, Result, cpu_seconds, print_table

PACED = 300.0  # calls/s: a moderate load, where latency is HAProxy's and not queueing's


async def run(bench: Bench) -> list[Result]:
    if HAPROXY is None:
        return [Result("11. haproxy", note="haproxy is not installed")]
    seconds = QUICK_SECONDS if bench.quick else SECONDS
    url = await bench.seeded(bench.fleet)
    rows, results = [], []
    async with bench.daemon(url, offline_after=3600) as daemon:
        target = (daemon.grpc_port, daemon.http_port)
        async with haproxy([target, target]) as balancer:
            for rate in (0.0, PACED):
                load = f"paced at {rate:,.0f}/s" if rate else f"{IN_FLIGHT} in flight"
                direct = await measure(
                    f"direct, {load}",
                    daemon.pid,
                    daemon.grpc_port,
                    "unary",
                    seconds,
                    IN_FLIGHT,
                    rate,
                )
                before = cpu_seconds(balancer.pid)
                through = await measure(
                    f"through haproxy, {load}",
                    daemon.pid,
                    balancer.port,
                    "unary",
                    seconds,
                    IN_FLIGHT,
                    rate,
                )
                haproxy_ms = (cpu_seconds(balancer.pid) - before) / max(through.calls, 1) * 1000
                rows += [(*direct.row(), None), (*through.row(), haproxy_ms)]
                results.append(
                    Result(
                        f"11. unary {load}, through haproxy",
                        through.rate,
                        "calls/s",
                        through.p50,
                        through.p95,
                        through.p99,
                        note=f"direct: {direct.rate:,.0f} calls/s, p50 {direct.p50:.1f} / "
                        f"p99 {direct.p99:.1f} ms; haproxy CPU {haproxy_ms:.3f} ms/call",
                    )
                )
    print_table(
        "11. haproxy: unary SendStatus direct and through HAProxy",
        f"one daemon behind both of HAProxy's servers; {seconds:.0f} s each, from a separate "
        "grpclib client process; CPU = the daemon's (and HAProxy's) CPU per call",
        [
            "run",
            "calls",
            "calls/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "daemon CPU ms/call",
            "errors",
            "haproxy CPU ms/call",
        ],
        rows,
    )
    return results
