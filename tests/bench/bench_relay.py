"""Workload 12, the relay with three daemons: NOTIFY against NATS JetStream.

Three `droneshield serve` processes share one database and one relay (NOTIFY, or a private
nats-server with its own store). Each has one WebSocket client subscribed to every sensor
(filter `{}`), so each daemon announces interest in all of them and every change must reach
both peers.

- ceiling: a separate process publishes synthetic changes (real serials) through the relay's
  own bus as fast as the bus takes them, packed as the relay packs them, for SECONDS; the
  figure is what each daemon received per second (its /metrics), i.e. the changes/s one
  daemon can feed the others.
- reports, every sensor watched: SendStatusBatch of BATCH reports, IN_FLIGHT calls to each
  daemon, closed loop; every report is a heartbeat a peer watches, so each is relayed.
- reports, one page watched: the same with each client watching PAGE sensors: heartbeats of
  unwatched sensors stay home, only transitions and watched heartbeats travel.
"""

from __future__ import annotations

import itertools
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from droneshield.bus import Message
from droneshield.bus.jetstream import JetStreamBus, default_stream
from droneshield.bus.notify import NotifyBus
from droneshield.db import seed
from droneshield.db.pool import connect, open_pool
from droneshield.domain import SensorState
from droneshield.relay import encode
from tests.support.grpc_clients import grpclib_stub
from tests.support.live_client import open_live
from tests.support.nats_server import missing, private_nats

from . import load
from .support import Bench, Result, cpu_seconds, print_table, run_client

DAEMONS: Final = 3
FLEET: Final = 30_000  # sensors: each daemon goes round its third a few times a row
FLEET_QUICK: Final = 15_000
SECONDS: Final = 10.0  # of load per row
SECONDS_QUICK: Final = 4.0
BATCH: Final = 500  # reports per SendStatusBatch
IN_FLIGHT: Final = 2  # calls per daemon
PAGE: Final = 50  # sensors a client watches in the "one page" rows
PUBLISH_CHANGES: Final = 5_000  # changes per publish in the ceiling row (one relay gather)
ANNOUNCED: Final = 1.0  # seconds for the clients' interest to reach the peers
NOTIFY: Final = "notify"
ONLINE: Final = (
    "UPDATE sensor SET online = true, last_seen_at = now(), status_changed_at = now(), "
    "version = '1.0.0', version_key = (SELECT version_key FROM software WHERE version = '1.0.0')"
)
SETTLE: Final = 0.5  # seconds without a change received before the receivers count as drained


async def _counters(http_port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{http_port}/metrics")).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "droneshield_relay_changes_total":
                values[sample.labels["direction"]] = sample.value
            elif sample.name == "droneshield_relay_gaps_total":
                values["gaps"] = sample.value
            elif sample.name == "droneshield_reports_total" and sample.labels["outcome"] == "ok":
                values["reports"] = sample.value
    return values


async def _publish(relay_url: str, database_url: str, fleet: int, seconds: float) -> None:
    """Ceiling rows: publish synthetic changes through the bus for `seconds`."""
    now = datetime.now(UTC)
    changes = [
        SensorState(n, seed.serial_for(n), "1.0.0", "online", now, now) for n in range(1, fleet + 1)
    ]
    instance = uuid.uuid4().hex[:16]
    async with AsyncExitStack() as stack:
        if relay_url == NOTIFY:
            pool = await stack.enter_async_context(open_pool(database_url, size=1))
            bus: Any = NotifyBus(pool, database_url)
        else:
            bus = JetStreamBus(relay_url, default_stream(database_url))
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(bus.serve, lambda payload: None, lambda: None)
            stack.callback(nursery.cancel_scope.cancel)
        groups = [
            encode(instance, changes[i : i + PUBLISH_CHANGES], bus.payload_max)
            for i in range(0, fleet, PUBLISH_CHANGES)
        ]
        # Each message under a key of its own, as the relay sends them: JetStream drops a
        # message whose key it has stored as a copy (the groups are sent again and again).
        keys = itertools.count()
        # Not cancelled mid-publish: stop between two, as the relay does when it is idle.
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            for group in groups:
                await bus.publish([Message(0, p, f"{instance}.{next(keys)}") for p in group])


async def _report(grpc_ports: list[int], fleet: int, seconds: float) -> None:
    """Report rows: closed-loop batches to every daemon for `seconds`, each daemon going round
    its own share of the fleet."""
    share = fleet // len(grpc_ports)

    def batches(first: int) -> Any:
        while True:
            for i in range(first, first + share, BATCH):
                yield [(seed.serial_for(n + 1), "1.0.0") for n in range(i, i + BATCH)]

    async def drive(port: int, first: int) -> None:
        async with grpclib_stub(port) as stub:
            await load.flood(stub, batches(first), IN_FLIGHT)

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for n, port in enumerate(grpc_ports):
                nursery.start_soon(drive, port, n * share)


async def _measure(
    workload: str,
    relay_url: str,
    database_url: str,
    fleet: int,
    seconds: float,
    grpc_ports: str,
    http_ports: str,
    pids: str,
) -> dict[str, Any]:
    """Load process: run the workload; the daemons' relay counters (summed) per second and
    the CPU% of `pids`, over the load (SETTLE more for the counters)."""
    https = [int(p) for p in http_ports.split(",")]
    processes = [int(p) for p in pids.split(",")]
    before = [await _counters(p) for p in https]
    cpu, began = [cpu_seconds(p) for p in processes], trio.current_time()
    if workload == "ceiling":
        await _publish(relay_url, database_url, fleet, seconds)
    else:
        await _report([int(p) for p in grpc_ports.split(",")], fleet, seconds)
    elapsed = trio.current_time() - began
    cpu = [(cpu_seconds(p) - c) / elapsed * 100 for p, c in zip(processes, cpu, strict=True)]
    # Receivers may lag the senders (NOTIFY queues in PostgreSQL, JetStream in the stream):
    # count until they have drained, over the time they took.
    after = [await _counters(p) for p in https]
    while True:
        await trio.sleep(SETTLE)
        later = [await _counters(p) for p in https]
        if sum(c.get("received", 0) for c in later) == sum(c.get("received", 0) for c in after):
            break
        after = later
        elapsed = trio.current_time() - began
    delta = {
        key: sum(a.get(key, 0) - b.get(key, 0) for a, b in zip(after, before, strict=True))
        for key in ("reports", "sent", "received", "kept", "gaps")
    }
    return {key: value / elapsed for key, value in delta.items()} | {
        "gaps": delta["gaps"],
        "cpu": cpu,
    }


@asynccontextmanager
async def _relay(backend: str) -> AsyncIterator[tuple[str, list[int]]]:
    """(the daemons' relay_url, or NOTIFY; the pids of what serves it besides PostgreSQL)."""
    if backend == NOTIFY:
        yield NOTIFY, []
        return
    async with private_nats() as server:
        yield server.url, [server.pid]


async def _watch(
    port: int, serials: list[str] | None, *, task_status: trio.TaskStatus[None]
) -> None:
    async with open_live(port) as client:
        if serials is None:
            await client.subscribe(where={})
        else:
            await client.subscribe(serials)
        task_status.started()
        while True:
            await client.receive()


async def _backend(
    bench: Bench, url: str, backend: str, fleet: int, seconds: float
) -> dict[str, dict[str, Any]]:
    """Every workload on three daemons relaying over `backend`."""
    rows: dict[str, dict[str, Any]] = {}
    async with _relay(backend) as (relay_url, helpers), AsyncExitStack() as stack:
        flags = {} if relay_url == NOTIFY else {"relay_url": relay_url}
        daemons = [
            await stack.enter_async_context(bench.daemon(url, **flags)) for _ in range(DAEMONS)
        ]
        pids = ",".join(str(p) for p in [d.pid for d in daemons] + helpers)
        for workload in WORKLOADS:
            async with connect(url) as conn:
                await conn.execute(ONLINE)  # heartbeats from the start, not transitions
            async with trio.open_nursery() as nursery:
                for n, d in enumerate(daemons):
                    # A page of the sensors the next daemon takes reports for.
                    first = (n + 1) % DAEMONS * (fleet // DAEMONS) + 1
                    page = [seed.serial_for(s) for s in range(first, first + PAGE)]
                    await nursery.start(_watch, d.http_port, page if workload == "page" else None)
                # The daemons announce a changed interest within ~0.1 s; nothing outside them
                # can see when their peers have it, so the load waits that long and some.
                await trio.sleep(ANNOUNCED)
                rows[workload] = await run_client(
                    __name__,
                    workload,
                    relay_url,
                    url,
                    fleet,
                    seconds,
                    ",".join(str(d.grpc_port) for d in daemons),
                    ",".join(str(d.http_port) for d in daemons),
                    pids,
                )
                nursery.cancel_scope.cancel()
    return rows


WORKLOADS: Final = {  # the ceiling last: it leaves a backlog that other rows would count
    "all": "reports, every sensor watched",
    "page": f"reports, {PAGE} sensors of another daemon's watched per daemon",
    "ceiling": "synthetic changes published as fast as the bus takes them",
}


async def run(bench: Bench) -> list[Result]:
    fleet = bench.scaled(FLEET, FLEET_QUICK)
    seconds = SECONDS_QUICK if bench.quick else SECONDS
    backends = [NOTIFY] if missing() is not None else [NOTIFY, "nats"]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    async with bench.unheard(fleet) as url:
        for backend in backends:
            for workload, row in (await _backend(bench, url, backend, fleet, seconds)).items():
                out[backend, workload] = row
    print_table(
        "14. relay: three daemons, NOTIFY vs NATS JetStream",
        f"{DAEMONS} daemons on one database, {fleet:,} sensors; one WebSocket client per daemon "
        f"watching every sensor (or {PAGE}); {seconds:g} s per row; rates summed over the "
        "daemons from their /metrics: reports committed, changes sent to peers, received from "
        "peers, heartbeats kept home; gaps = resyncs; CPU% of each daemon (and nats-server)",
        [
            "relay",
            "workload",
            "reports/s",
            "sent/s",
            "received/s",
            "kept/s",
            "gaps",
            "CPU %",
        ],
        [
            (
                backend,
                WORKLOADS[workload],
                r["reports"],
                r["sent"],
                r["received"],
                r["kept"],
                r["gaps"],
                " / ".join(f"{c:.0f}" for c in r["cpu"]),
            )
            for (backend, workload), r in out.items()
        ],
    )
    return [
        Result(
            f"14. relay {backend}, {WORKLOADS[workload]}",
            r["received"] / (DAEMONS if workload == "ceiling" else 1),
            "changes/s received" + (" per daemon" if workload == "ceiling" else ""),
            note=f"{r['gaps']:.0f} gaps; sent {r['sent']:,.0f}/s, kept {r['kept']:,.0f}/s",
        )
        for (backend, workload), r in out.items()
    ]


if __name__ == "__main__":
    workload, relay_url, database_url, fleet, seconds, *ports = sys.argv[1:]
    load.main(_measure, workload, relay_url, database_url, int(fleet), float(seconds), *ports)
