"""Ingest throughput and ack latency through the whole daemon (gRPC → channel → group commit →
PostgreSQL). The load comes from grpclib clients in a separate process, so the daemon's CPU cost
is its own (betterproto2 encoding is as expensive on the client as parsing is on the server)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import trio
import trio_asyncio
from grpclib.client import Channel

from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import seed
from droneshield.db.pool import connect
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch, DeviceStatusServiceStub

from .support import bench_database, percentiles, print_table

SENSORS = 100_000
UNARY_CALLS = 3_000
UNARY_CONCURRENCY = 64
BATCHES = 100
BATCH_SIZE = 1_000
BATCH_CONCURRENCY = 4


async def _timed(calls, concurrency: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    """Run coroutine factories with bounded concurrency; (elapsed s, latencies s)."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(make):  # type: ignore[no-untyped-def]
        async with gate:
            start = time.perf_counter()
            await make()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    return time.perf_counter() - start, latencies


async def _load(port: int) -> list[tuple]:
    serials = [seed.serial_for(n) for n in range(1, SENSORS + 1)]
    channel = Channel("127.0.0.1", port)
    stub = DeviceStatusServiceStub(channel)
    try:
        unary = [
            (lambda s=s: stub.send_status(DeviceStatus(serial=s, software_version="1.0.0")))
            for s in serials[:UNARY_CALLS]
        ]
        elapsed_u, lat_u = await _timed(unary, UNARY_CONCURRENCY)
        batches = [
            (
                lambda i=i: stub.send_status_batch(
                    DeviceStatusBatch(
                        statuses=[
                            DeviceStatus(serial=s, software_version="1.0.0")
                            for s in serials[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
                        ]
                    )
                )
            )
            for i in range(BATCHES)
        ]
        elapsed_b, lat_b = await _timed(batches, BATCH_CONCURRENCY)
    finally:
        channel.close()
    return [
        ("unary SendStatus", UNARY_CALLS, UNARY_CALLS / elapsed_u, *percentiles(lat_u)),
        (
            f"SendStatusBatch x{BATCH_SIZE}",
            BATCHES * BATCH_SIZE,
            BATCHES * BATCH_SIZE / elapsed_b,
            *percentiles(lat_b),
        ),
    ]


async def _run(url: str) -> list[tuple]:
    async with trio_asyncio.open_loop():
        async with connect(url) as conn:
            await seed.seed(conn, SENSORS)
            # The reported version is uploaded: the common case, and acks stay small.
            await conn.execute(
                "INSERT INTO software (version, filename, path, size_bytes, sha256) "
                "VALUES ('1.0.0', 'v1.0.0.pdf', 'v1.0.0.pdf', 1, repeat('0', 64))"
            )
        with TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), http_port=0, grpc_port=0)
            async with trio.open_nursery() as nursery:
                running = await nursery.start(daemon.run, settings, url)
                client = await trio.run_process(
                    [sys.executable, "-m", "tests.bench.bench_ingest", str(running.grpc_port)],
                    capture_stdout=True,
                )
                rows = json.loads(client.stdout)
                statements = running.writer.statements
                nursery.cancel_scope.cancel()
    return [(*r, statements) for r in rows]


def main() -> None:
    with bench_database() as url:
        rows = trio.run(_run, url)
    print_table(
        "ingest: reports committed per second",
        f"{SENSORS:,} seeded sensors; {UNARY_CALLS:,} unary calls at concurrency "
        f"{UNARY_CONCURRENCY}, then {BATCHES} batches of {BATCH_SIZE:,} at concurrency "
        f"{BATCH_CONCURRENCY}, from a separate client process "
        "(client, daemon and PostgreSQL share the machine's cores)",
        ["RPC", "reports", "reports/s", "p50 ms", "p95 ms", "p99 ms", "statements (total)"],
        rows,
    )


if __name__ == "__main__":  # the load generator's process
    print(json.dumps(asyncio.run(_load(int(sys.argv[1])))))
