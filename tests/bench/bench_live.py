"""Live fan-out: how many changes per second one daemon relays to another over NOTIFY/LISTEN,
and how fast changes reach many WebSocket clients (publish → client, through coalescing).

Everything runs in this process (two daemons, the clients), so the numbers include the clients'
own CPU: read them as lower bounds on one core."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import trio
import trio_asyncio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.hub import SensorChange
from tests.live_client import open_live

from .support import bench_database, percentiles, print_table

RELAY_CHUNKS = (1_000, 5_000, 15_000)  # changes published at once (below OUTBOX_MAX)
RELAY_TOTAL = 150_000  # changes relayed per chunk size
CLIENTS = 50  # WebSocket clients, each watching a page of its own
PAGE = 50  # sensors on each client's page
ROUNDS = 40  # every sensor of every page changes once per round
ROUND_GAP = 0.05  # seconds between rounds (20 rounds/s: faster than a client's 10 flushes/s)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _changes(first: int, count: int, version: str = "1.0.0") -> list[SensorChange]:
    return [
        SensorChange(n, f"B-{n:08d}", version, "online", NOW, NOW)
        for n in range(first, first + count)
    ]


async def _relay(a: daemon.Running, b: daemon.Running) -> list[tuple]:
    """Closed loop: publish a chunk into A, wait until B has it, repeat."""
    rows = []
    with b.hub.subscribe(None, max_pending=RELAY_TOTAL + 1):  # B wants everything
        for chunk in RELAY_CHUNKS:
            base = b.relay.received
            start = trio.current_time()
            for first in range(0, RELAY_TOTAL, chunk):
                a.hub.publish(_changes(first, chunk))
                while b.relay.received < base + first + chunk:  # noqa: ASYNC110 (a counter)
                    await trio.sleep(0.002)
            elapsed = trio.current_time() - start
            rows.append((f"chunks of {chunk:,}", RELAY_TOTAL, RELAY_TOTAL / elapsed))
    return rows


async def _fan_out(a: daemon.Running) -> tuple:
    latencies: list[float] = []
    received = 0
    sent_at: dict[str, float] = {}

    async def client(page: int, *, task_status: trio.TaskStatus[None]) -> None:
        nonlocal received
        serials = [f"B-{n:08d}" for n in range(page * PAGE, (page + 1) * PAGE)]
        async with open_live(a.http_port) as live:
            await live.subscribe(serials)
            task_status.started()
            last = f"v1.0.{ROUNDS - 1}"
            done = 0
            while done < PAGE:
                message = await live.next("sensor")
                now = trio.current_time()
                received += 1
                for item in message["sensors"]:
                    latencies.append(now - sent_at[item["version"]])
                    done += item["version"] == last

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for page in range(CLIENTS):
            await nursery.start(client, page)
        start = trio.current_time()
        for r in range(ROUNDS):
            version = f"1.0.{r}"
            sent_at[f"v{version}"] = trio.current_time()
            a.hub.publish(_changes(0, CLIENTS * PAGE, version))
            await trio.sleep(ROUND_GAP)
    elapsed = trio.current_time() - start
    changes = CLIENTS * PAGE * ROUNDS
    return (
        f"{CLIENTS} clients x {PAGE} sensors, {ROUNDS} rounds",
        changes,
        changes / elapsed,
        *percentiles(latencies),
        received / CLIENTS / elapsed,
    )


async def _run(url: str) -> tuple[list[tuple], tuple]:
    async with trio_asyncio.open_loop():
        with TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), http_port=0, grpc_port=0)
            async with trio.open_nursery() as nursery:
                a = await nursery.start(daemon.run, settings, url)
                b = await nursery.start(daemon.run, settings, url)
                relay = await _relay(a, b)
                fan_out = await _fan_out(a)
                nursery.cancel_scope.cancel()
    return relay, fan_out


def main() -> None:
    with bench_database() as url:
        relay, fan_out = trio.run(_run, url)
    print_table(
        "live: changes relayed between daemons (NOTIFY/LISTEN)",
        "changes published into daemon A's hub, each chunk once daemon B's hub has the last; "
        "payloads packed to <8 kB, up to 100 per NOTIFY statement",
        ["published in", "changes", "changes/s"],
        relay,
    )
    print_table(
        "live: changes reaching WebSocket clients",
        f"every sensor on {CLIENTS} pages of {PAGE} changes {1 / ROUND_GAP:.0f} times a second; "
        "latency from publish to the client's receipt (coalesced to ≤ 10 flushes/s per client); "
        "clients run in the daemon's process",
        ["workload", "changes", "changes/s", "p50 ms", "p95 ms", "p99 ms", "msgs/s per client"],
        [fan_out],
    )
