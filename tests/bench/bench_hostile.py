"""Workload 10, hostile clients: what each attack of issue #17 costs the daemon while it runs.

For each attack, ATTACKERS connections in another process, from another address than the normal
clients (ATTACKER, 127.0.0.2), attack for DURATION seconds (each reconnects as soon as the daemon
closes it): rapid reset, PING and SETTINGS floods on the gRPC
port, idle connections held open on both ports, made-up HTTP methods. Meanwhile this process asks
`/healthz` and sends a normal `SendStatus` PROBE_RATE times a second each, and samples the daemon's
RSS, from the attacker process's start to its end. A row gives the RSS growth at its peak and
SETTLE seconds after the attack, the probes' p99, and the connections the daemon closed. Last,
SIGTERM after all the attacks: the seconds until the daemon has exited.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any, Final

import httpx
import trio
from grpclib import GRPCError
from grpclib.exceptions import StreamTerminatedError

from droneshield.db import seed
from droneshield.db.pool import connect
from droneshield.ingest.proto.status import DeviceStatus
from tests.support.grpc_clients import aio, grpclib_stub
from tests.support.h2_attacks import ATTACKER, ATTACKS, H2Client
from tests.support.releases import add_software

from . import load
from .support import Bench, Result, percentiles, print_table, rss_mb, run_client

DURATION: Final = 10.0  # seconds per attack
DURATION_QUICK: Final = 3.0
ATTACKER_STARTUP: Final = 3.0  # seconds for the attacker process to import and connect
SETTLE: Final = 2.0  # seconds after an attack before its "after" RSS is read
ATTACKERS: Final = 8  # attacking connections at a time
IDLE_CONNECTIONS: Final = 1000  # connections held open by the idle attack
PROBE_RATE: Final = 20.0  # /healthz and SendStatus calls per second each
P99_GOAL: Final = 200.0  # ms
RSS_GOAL: Final = 50.0  # MB of growth
SIGTERM_GOAL: Final = 5.0  # seconds
GRPC_ATTACKS: Final = (*ATTACKS, "idle gRPC connections")
HTTP_ATTACKS: Final = ("made-up HTTP methods", "idle HTTP connections")


async def _flood(port: int, name: str, until: float) -> int:
    """Attack with `name` over and over until `until`; the connections the daemon closed."""
    closed = 0
    while trio.current_time() < until:
        with trio.move_on_at(until):
            client = await H2Client.connect(port, ATTACKER)
            try:
                await client.attack(ATTACKS[name])
            finally:
                await client.aclose()
            closed += client.closed
    return closed


async def _hold(port: int, request: bytes, until: float) -> int:
    """Hold a connection (after `request`, if any) until the daemon closes it, then again."""
    closed = 0
    while trio.current_time() < until:
        with trio.move_on_at(until):
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER)
            try:
                await stream.send_all(request)
                while await stream.receive_some():
                    pass
                closed += 1
            except trio.BrokenResourceError:
                closed += 1
            finally:
                await stream.aclose()
    return closed


async def _methods(port: int, until: float) -> int:
    """One request with a new made-up method per connection (HTTP/1.0: the daemon closes)."""
    sent = 0
    while trio.current_time() < until:
        request = f"X{sent:08d}{time.time_ns()} /healthz HTTP/1.0\r\n\r\n".encode()
        closed = await _hold(port, request, trio.current_time() + 5.0)
        sent += closed
    return sent


async def _attack(name: str, grpc_port: int, http_port: int, start: float, seconds: float) -> Any:
    """Attacker process: ATTACKERS (or IDLE_CONNECTIONS) connections for `seconds` from
    `start` (wall clock: the probes begin then too, not while this process starts up)."""
    await trio.sleep(max(0.0, start - time.time()))
    until = trio.current_time() + seconds
    counts: list[int] = []

    async def one(attack: Any, *args: Any) -> None:
        counts.append(await attack(*args, until))

    async with trio.open_nursery() as nursery:
        if name in ATTACKS:
            for _ in range(ATTACKERS):
                nursery.start_soon(one, _flood, grpc_port, name)
        elif name == "made-up HTTP methods":
            for _ in range(ATTACKERS):
                nursery.start_soon(one, _methods, http_port)
        else:
            port = grpc_port if "gRPC" in name else http_port
            request = b"" if "gRPC" in name else b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(IDLE_CONNECTIONS):
                nursery.start_soon(one, _hold, port, request)
    return {"closed": sum(counts)}


async def _probe(
    grpc_port: int, http_port: int, serial: str, pid: int, start: float, done: trio.Event
) -> Any:
    """Normal clients and RSS samples from `start` (wall clock) until `done` (the attacker
    process has ended)."""
    health: list[float] = []
    reports: list[float] = []
    failed = {"healthz": 0, "SendStatus": 0}
    peak = 0.0

    async def healthz(client: httpx.AsyncClient) -> None:
        began = trio.current_time()
        try:
            (await client.get("/healthz")).raise_for_status()
        except httpx.HTTPError:
            failed["healthz"] += 1  # counted, not fatal: how often is part of the figure
        else:
            health.append(trio.current_time() - began)

    async def report(stub: Any) -> None:
        began = trio.current_time()
        try:
            await aio(stub.send_status, DeviceStatus(serial, "v1.0.0"))
        except (GRPCError, OSError, StreamTerminatedError):
            failed["SendStatus"] += 1
        else:
            reports.append(trio.current_time() - began)

    url = f"http://127.0.0.1:{http_port}"
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        grpclib_stub(grpc_port) as stub,
        trio.open_nursery() as nursery,
    ):
        await trio.sleep(max(0.0, start - time.time()))
        began, tick = trio.current_time(), 0
        while not done.is_set():
            await trio.sleep_until(began + tick / PROBE_RATE)
            nursery.start_soon(healthz, client)
            nursery.start_soon(report, stub)
            peak = max(peak, rss_mb(pid))
            tick += 1
    return {"health": health, "reports": reports, "peak": peak, "failed": failed}


async def _one(daemon: Any, name: str, serial: str, seconds: float) -> tuple[list[Any], Result]:
    before = daemon.rss_mb()
    outcome: dict[str, Any] = {}
    done = trio.Event()
    start = time.time() + ATTACKER_STARTUP

    async def attacker() -> None:
        try:
            outcome["attack"] = await run_client(
                __name__, name, daemon.grpc_port, daemon.http_port, start, seconds
            )
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacker)
        probes = await _probe(daemon.grpc_port, daemon.http_port, serial, daemon.pid, start, done)
    await trio.sleep(SETTLE)
    after = daemon.rss_mb()
    health = percentiles(probes["health"])[2]
    report = percentiles(probes["reports"])[2]
    growth = probes["peak"] - before
    failed = probes["failed"]
    row = [
        name,
        before,
        growth,
        after - before,
        health,
        report,
        f"{failed['healthz']} / {failed['SendStatus']}",
        outcome["attack"]["closed"],
    ]
    met = growth < RSS_GOAL and health < P99_GOAL and report < P99_GOAL and not any(failed.values())
    result = Result(
        f"12. hostile: {name}",
        p99=max(health, report),
        rss_mb=probes["peak"],
        goal=f"RSS +<{RSS_GOAL:g} MB, p99 <{P99_GOAL:g} ms",
        met=met,
        note=f"RSS +{growth:.0f} MB (+{after - before:.0f} after); p99 /healthz {health:.0f} ms, "
        f"SendStatus {report:.0f} ms",
    )
    return row, result


async def run(bench: Bench) -> list[Result]:
    seconds = DURATION_QUICK if bench.quick else DURATION
    rows: list[Any] = []
    results: list[Result] = []
    async with bench.database() as url:
        async with connect(url) as conn:
            await seed.seed(conn, 10)
            await add_software(conn, "1.0.0")
        async with bench.daemon(url) as daemon:
            for name in (*GRPC_ATTACKS, *HTTP_ATTACKS):
                row, result = await _one(daemon, name, seed.serial_for(1), seconds)
                rows.append(row)
                results.append(result)
            began = trio.current_time()
            daemon.spawned.process.send_signal(signal.SIGTERM)
            await daemon.spawned.exited()
            stopped = trio.current_time() - began
    print_table(
        "12. hostile: attacks from another process, normal clients beside",
        f"each attack {seconds:g} s from {ATTACKERS} connections at {ATTACKER} "
        f"({IDLE_CONNECTIONS:,} for the idle ones), default budgets; probes: /healthz and "
        f"SendStatus {PROBE_RATE:g}/s each; RSS after = {SETTLE:g} s after the attack; "
        f"SIGTERM afterwards: {stopped:.1f} s",
        [
            "attack",
            "RSS MB before",
            "peak +MB",
            "after +MB",
            "/healthz p99 ms",
            "SendStatus p99 ms",
            "probes failed (healthz / SendStatus)",
            "connections closed",
        ],
        rows,
    )
    results.append(
        Result(
            "12. hostile: SIGTERM after the attacks",
            rate=stopped,
            unit="s",
            goal=f"< {SIGTERM_GOAL:g} s",
            met=stopped < SIGTERM_GOAL,
        )
    )
    return results


if __name__ == "__main__":
    load.main(_attack, sys.argv[1], *map(int, sys.argv[2:4]), *map(float, sys.argv[4:6]))
