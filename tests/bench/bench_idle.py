"""Workload 9, idle dashboards: what thousands of open WebSocket connections cost the daemon in
memory and CPU while reports keep flowing.

REPORTERS sensors report every REPORTERS / RATE seconds (RATE reports/s, batches of BATCH over
gRPC, open loop) for the whole run; all of them reported once before, so the fleet totals stay
put and no `summary` message is due. The daemon's CPU% (CPU seconds / wall seconds) and RSS are
measured over a WINDOW of that load alone, then again once CLIENTS WebSocket clients are
connected, each subscribed to a page of PAGE sensors that stay silent (pages shared by many
clients, as dashboards would): the clients only answer keep-alive pings. The difference is the
clients' cost. The load process holds the clients and the gRPC load and reads the daemon's
/proc itself, so the windows are exact.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio
from trio_websocket import ConnectionClosed

from droneshield.config import WS_PING_INTERVAL_DEFAULT
from droneshield.db import seed
from droneshield.db.pool import connect
from tests.support.grpc_clients import grpclib_stub
from tests.support.live_client import open_live
from tests.support.releases import add_software

from . import load
from .support import Bench, Result, cpu_seconds, print_table, rss_mb, run_client

CLIENTS: Final = 5_000
CLIENTS_QUICK: Final = 300
REPORTERS: Final = 10_000  # sensors that report (each every 10 s at RATE)
WATCHED: Final = 10_000  # silent sensors the clients' pages show
PAGE: Final = 20  # sensors on a client's page
RATE: Final = 1_000  # reports per second
BATCH: Final = 100  # reports per SendStatusBatch
WINDOW: Final = 20.0  # seconds measured, with and without the clients
WINDOW_QUICK: Final = 3.0
CONNECTING: Final = 50  # clients in their handshake at once (hypercorn's backlog is 100)
# Seconds before a handshake is given up and tried again: under load the server sometimes
# closes a connection before its handshake is done, and the client then waits for ever.
HANDSHAKE_TIMEOUT: Final = 20.0
FLOOD_CONCURRENCY: Final = 4  # calls in flight while every reporter reports once at start


def _page(client: int) -> list[str]:
    first = REPORTERS + 1 + client * PAGE % WATCHED
    return [seed.serial_for(n) for n in range(first, first + PAGE)]


async def _phase(
    pid: int, tally: load.Tally, work: Callable[[], Awaitable[object]]
) -> dict[str, float]:
    """Run `work`; the daemon's (and this load process's) CPU% and the daemon's RSS over it,
    and the reports failed meanwhile."""
    cpu, own, began = cpu_seconds(pid), cpu_seconds(os.getpid()), trio.current_time()
    unavailable = tally.unavailable
    await work()
    seconds = trio.current_time() - began
    return {
        "seconds": seconds,
        "cpu": (cpu_seconds(pid) - cpu) / seconds * 100,
        "load_cpu": (cpu_seconds(os.getpid()) - own) / seconds * 100,
        "rss": rss_mb(pid),
        "unavailable": tally.unavailable - unavailable,
    }


async def _idle(grpc_port: int, http_port: int, pid: int, clients: int, window: float) -> Any:
    """Load process: reports throughout; a window without clients, then one with them."""
    serials = [seed.serial_for(n) for n in range(1, REPORTERS + 1)]
    batches = [[(s, "1.0.0") for s in serials[i : i + BATCH]] for i in range(0, REPORTERS, BATCH)]
    messages = retried = dropped = 0

    async def idle_client(client: int, *, task_status: trio.TaskStatus[None]) -> None:
        nonlocal messages, retried, dropped
        while True:
            with trio.move_on_after(HANDSHAKE_TIMEOUT) as handshake:
                async with open_live(http_port) as live:
                    await live.subscribe(_page(client))
                    handshake.deadline = math.inf
                    task_status.started()
                    try:
                        while True:
                            await live.receive()  # answers pings on the way
                            messages += 1
                    except ConnectionClosed:
                        dropped += 1  # the server gave up on it (no pong in ws_timeout)
                        return
            retried += 1

    tally = load.Tally()
    async with grpclib_stub(grpc_port) as stub, trio.open_nursery() as nursery:
        await load.flood(stub, batches, FLOOD_CONCURRENCY)
        nursery.start_soon(load.paced, stub, itertools.cycle(batches), RATE / BATCH, tally)
        alone = await _phase(pid, tally, partial(trio.sleep, window))
        connecting = await _phase(
            pid,
            tally,
            partial(
                load.start_all, nursery, idle_client, [(c,) for c in range(clients)], CONNECTING
            ),
        )
        messages = 0
        with_clients = await _phase(pid, tally, partial(trio.sleep, window))
        with_clients["messages"] = messages / window
        with_clients["dropped"] = dropped
        nursery.cancel_scope.cancel()
    connecting["retried"] = retried
    return {"alone": alone, "connecting": connecting, "with_clients": with_clients}


def _open_files_limit(pid: int) -> str:
    """The daemon's soft limit on open files, as /proc shows it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    raise KeyError("Max open files")


async def run(bench: Bench) -> list[Result]:
    clients = bench.scaled(CLIENTS, CLIENTS_QUICK)
    window = WINDOW_QUICK if bench.quick else WINDOW
    async with bench.database() as url:
        async with connect(url) as conn:
            await seed.seed(conn, REPORTERS + WATCHED)
            await add_software(conn, "1.0.0")
        # Every client connects from 127.0.0.1, as from behind one gateway: the per-address
        # limits are raised as README (Security) says to for one.
        async with bench.daemon(
            url,
            http_max_connections_per_address=clients + 100,
            http_connection_rate_per_address=clients + 100,
        ) as daemon:
            limit = _open_files_limit(daemon.pid)
            out = await run_client(
                __name__, daemon.grpc_port, daemon.http_port, daemon.pid, clients, window
            )
    alone, connecting, full = out["alone"], out["connecting"], out["with_clients"]
    per_client_kb = (full["rss"] - alone["rss"]) * 1024 / clients
    print_table(
        "9. idle: open WebSocket clients under a steady report load",
        f"{RATE:,} reports/s from {REPORTERS:,} sensors (batches of {BATCH}, open loop) "
        f"throughout; measured over {window:g} s without clients, then over {window:g} s with "
        f"{clients:,} clients connected ({CONNECTING} handshakes at a time), each watching "
        f"{PAGE} silent sensors and answering pings (every {WS_PING_INTERVAL_DEFAULT:g} s); "
        f"UNAVAILABLE = reports not committed within their deadline; daemon's open-files "
        f"limit {limit}",
        [
            "phase",
            "seconds",
            "CPU %",
            "load CPU %",
            "RSS MB",
            "kB/client",
            "UNAVAILABLE",
            "client msgs/s",
        ],
        [
            (
                name,
                r["seconds"],
                r["cpu"],
                r["load_cpu"],
                r["rss"],
                kb,
                r["unavailable"],
                r.get("messages"),
            )
            for name, r, kb in (
                ("no clients", alone, None),
                (f"connecting {clients:,} ({connecting['retried']} retried)", connecting, None),
                (f"{clients:,} clients ({full['dropped']} dropped)", full, per_client_kb),
            )
        ],
    )
    return [
        Result(
            f"9. idle: {clients:,} WS clients + {RATE:,} reports/s",
            rss_mb=full["rss"],
            goal=(
                f"report: {per_client_kb:.0f} kB/client; CPU {full['cpu']:.0f}% "
                f"({alone['cpu']:.0f}% without clients)"
            ),
            met=None,
            note=f"{connecting['seconds']:.0f} s to connect ({connecting['retried']} "
            f"handshakes retried); {connecting['unavailable']:,} reports UNAVAILABLE meanwhile",
        )
    ]


if __name__ == "__main__":
    load.main(_idle, *map(int, sys.argv[1:5]), float(sys.argv[5]))
