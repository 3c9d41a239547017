"""Workloads 2 and 3, ingest through the whole daemon (gRPC → channel → group commit →
PostgreSQL, acked after commit), each beside a ceiling measured in the same run:
- unary SendStatus, 200 calls in flight, against grpclib's own ceiling (`bare_grpc`: the same
  service answering without any work; and the same on trio-asyncio, the loop the daemon runs
  grpclib on, so that the loop's share of the gap shows apart from the daemon's), then paced at
  150/s, 300/s and half that ceiling for latency, each rate alternately on the daemon and on a
  second one left with Python's garbage collector defaults (`--gc-young-threshold 0`): an A/B of
  the collector's settings in one run;
- SendStatusBatch of 500 against the database's own limit (workload 1): the batch statement on
  one and on four connections, beside the daemon with its default writer lanes, then with one,
  then with its default lanes again (rows minutes apart measured the table's state too).

The load comes from a separate process (grpclib client), so the daemon's CPU is its own; it is
read from /proc and reported per call. Client, daemon and PostgreSQL share the machine's cores,
so the client encodes with protobuf's C classes (as the daemon decodes): betterproto2's pure-Python
encoder cost the client most of a core at batch rates, taken from the daemon and the database.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence

from grpclib.client import Channel, UnaryUnaryMethod

from droneshield.config import WRITER_LANES_DEFAULT as LANES
from droneshield.db import seed
from droneshield.ingest.wire import BatchAck, DeviceStatus, DeviceStatusBatch, StatusAck
from tests.support import plain_asyncio
from tests.support.grpc_clients import SEND_BATCH, SEND_STATUS
from tests.support.processes import free_port, spawn

from .support import Bench, Result, cpu_seconds, percentiles, print_table, run_client

SENSORS = 100_000
IN_FLIGHT = 200  # unary calls in flight
BATCH = 500  # reports per SendStatusBatch
BATCH_IN_FLIGHT = 8
SECONDS = 15.0
QUICK_SECONDS = 2.0
PACED_RATES = (150.0, 300.0)  # calls/s: the loads a fleet sees most of the day
CALL_DEADLINE = 30.0  # seconds; a call that takes longer counts as an error
COLUMNS = ("run", "calls", "reports/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/call", "errors")


class Measured:
    """One load run as the load process saw it, plus the server's CPU over the run."""

    def __init__(self, label: str, reply: dict, cpu: float) -> None:
        self.label = label
        self.calls: int = reply["calls"]
        self.reports: int = reply["reports"]
        self.errors: int = reply["errors"]
        self.rate: float = self.reports / reply["elapsed"]
        self.p50, self.p95, self.p99 = percentiles(reply["latencies"])
        self.cpu_ms_per_call = cpu / self.calls * 1000 if self.calls else float("nan")

    def row(self) -> tuple:
        return (
            self.label,
            self.calls,
            self.rate,
            self.p50,
            self.p95,
            self.p99,
            self.cpu_ms_per_call,
            self.errors,
        )


async def measure(
    label: str,
    pid: int | Sequence[int],
    port: int,
    mode: str,
    seconds: float,
    in_flight: int,
    rate: float = 0.0,
    offset: int = 0,
) -> Measured:
    """One load run against the server on `port` whose CPU is that of `pid` (or of all the
    pids, for a server of several processes), reporting from the `offset`-th sensor on."""
    pids = [pid] if isinstance(pid, int) else pid

    def cpu() -> float:
        return sum(cpu_seconds(p) for p in pids)

    before = cpu()
    reply = await run_client(__name__, port, mode, seconds, in_flight, rate, offset)
    return Measured(label, reply, cpu() - before)


async def run(bench: Bench) -> list[Result]:
    seconds = QUICK_SECONDS if bench.quick else SECONDS
    port = free_port()
    async with spawn([sys.executable, "-m", "tests.bench.bare_grpc", str(port)]) as bare:
        await bare.wait_for("ready")
        pid = bare.process.pid
        ceiling = await measure("bare grpclib, unary", pid, port, "unary", seconds, IN_FLIGHT)
        bare_batch = await measure(
            f"bare grpclib, batch x{BATCH}", pid, port, "batch", seconds, BATCH_IN_FLIGHT
        )
    port = free_port()
    argv = [sys.executable, "-m", "tests.bench.bare_grpc", str(port), "trio-asyncio"]
    async with spawn(argv) as bare:
        await bare.wait_for("ready")
        label = "bare grpclib on trio-asyncio, unary"
        on_trio = await measure(label, bare.process.pid, port, "unary", seconds, IN_FLIGHT)
    url = await bench.seeded(bench.fleet)
    online = await bench.online(url)
    # Nothing goes offline during the run: only ingest is measured. The daemon with Python's
    # gc defaults starts now, so that its start-up (presence recovery runs after it is ready)
    # is over before the paced rows; started just before them, it overlapped the first.
    async with (
        bench.daemon(url, offline_after=3600) as daemon,
        bench.daemon(url, offline_after=3600, gc_young_threshold=0) as other,
    ):
        pid, port = daemon.pid, daemon.grpc_port
        # Both wheels recovered first: two daemons recovering a million online sensors took
        # the cores from the first batch row (DaemonProcess.recovered).
        for started in (daemon, other):
            await started.recovered(online)
        # The seeded fleet's first reports are transitions (1 in 10 comes online, 1 in 3
        # changes version: event rows, updates that are not HOT), every later one a heartbeat.
        # One pass over the load's sensors first, so that the batch rows compared below
        # all measure heartbeats; before, the first of them paid for that pass alone.
        await run_client(__name__, port, "warm-up", 0.0, BATCH_IN_FLIGHT, 0.0, 0)
        # Its transitions are updates that are not HOT; settled, they do not weigh on the
        # first batch row alone.
        await bench.settle()
        # The lanes side by side: LANES, one, LANES again. The same daemon's batch rate climbed
        # row after row (stop 34: 38k to 58k reports/s in eight rows of one code), so rows
        # minutes apart compared the table's state as much as the lanes.
        label = f"daemon, batch x{BATCH}, {LANES} lanes"
        batch = await measure(label, pid, port, "batch", seconds, BATCH_IN_FLIGHT)
        async with bench.daemon(url, offline_after=3600, writer_lanes=1) as single:
            await single.recovered(online)
            one_lane = await measure(
                f"daemon, batch x{BATCH}, 1 lane",
                single.pid,
                single.grpc_port,
                "batch",
                seconds,
                BATCH_IN_FLIGHT,
            )
        again = await measure(f"{label}, again", pid, port, "batch", seconds, BATCH_IN_FLIGHT)
        unary = await measure("daemon, unary", pid, port, "unary", seconds, IN_FLIGHT)
        # The rows above wrote ~1M times to the sensors they report for: their upkeep is
        # done before the light-load rows, whose tail it would otherwise set (Bench.settle).
        await bench.settle()
        paced, untuned = [], []
        rates = (*PACED_RATES, ceiling.rate / 2)
        for rate in rates:
            label = f"daemon, unary paced at {rate:,.0f}/s"
            paced.append(await measure(label, pid, port, "unary", seconds, IN_FLIGHT, rate))
            label += ", Python's gc defaults"
            untuned.append(
                await measure(label, other.pid, other.grpc_port, "unary", seconds, IN_FLIGHT, rate)
            )
        rss = daemon.rss_mb()
    alternated = [m for pair in zip(paced, untuned, strict=True) for m in pair]
    measured = [ceiling, on_trio, unary, *alternated]
    measured += [bare_batch, batch, one_lane, again]
    lanes_rate = (batch.rate + again.rate) / 2  # the two rows around the one-lane row
    print_table(
        "2-3. ingest: reports acked after commit",
        f"{SENSORS:,} sensors of a {bench.fleet:,} fleet; unary: {IN_FLIGHT} calls in flight; "
        f"batches of {BATCH} with {BATCH_IN_FLIGHT} in flight; {seconds:.0f} s each, from a "
        "separate grpclib client process; CPU = the server process's CPU per call",
        COLUMNS,
        [m.row() for m in measured],
    )
    bench.figures["unary_ceiling"] = ceiling.rate
    db_one, db_four = bench.figures.get("database_limit_1"), bench.figures.get("database_limit_4")
    batch_goal = max(20_000.0, 0.85 * db_four) if db_four else 20_000.0
    paced_results = [
        Result(
            f"2. unary, daemon paced at {rate:,.0f}/s",
            m.rate,
            "calls/s",
            m.p50,
            m.p95,
            m.p99,
            goal="p99 < 50 ms",
            met=m.p99 < 50 and not m.errors,
            note=f"Python's gc defaults: p99 {u.p99:,.1f} ms",
        )
        for rate, m, u in zip(rates, paced, untuned, strict=True)
    ]
    return [
        Result(
            "2. unary, bare grpclib ceiling",
            ceiling.rate,
            "calls/s",
            ceiling.p50,
            ceiling.p95,
            ceiling.p99,
        ),
        Result(
            "2. unary, bare grpclib on trio-asyncio (the daemon's loop)",
            on_trio.rate,
            "calls/s",
            on_trio.p50,
            on_trio.p95,
            on_trio.p99,
            note=f"{on_trio.rate / ceiling.rate:.0%} of the ceiling",
        ),
        Result(
            "2. unary, daemon",
            unary.rate,
            "calls/s",
            unary.p50,
            unary.p95,
            unary.p99,
            rss,
            goal=f">= {0.85 * ceiling.rate:,.0f} (85% of ceiling)",
            met=unary.rate >= 0.85 * ceiling.rate and not unary.errors,
            note=f"{unary.rate / ceiling.rate:.0%} of ceiling; "
            f"{unary.rate / on_trio.rate:.0%} of grpclib on trio-asyncio",
        ),
        *paced_results,
        Result(
            f"3. batch x{BATCH}, daemon, 1 lane",
            one_lane.rate,
            "reports/s",
            one_lane.p50,
            one_lane.p95,
            one_lane.p99,
            note=f"between the {LANES}-lane rows; {one_lane.rate / lanes_rate:.0%} of their mean"
            + (f"; {one_lane.rate / db_one:.0%} of the db limit on 1 conn." if db_one else ""),
        ),
        Result(
            f"3. batch x{BATCH}, daemon, {LANES} lanes (mean of the rows around 1 lane)",
            lanes_rate,
            "reports/s",
            max(batch.p50, again.p50),
            max(batch.p95, again.p95),
            max(batch.p99, again.p99),
            rss,
            goal=f">= {batch_goal:,.0f}" + (" (85% of db limit, 4 conn.)" if db_four else ""),
            met=lanes_rate >= batch_goal and not batch.errors and not again.errors,
            note=f"rows {batch.rate:,.0f} and {again.rate:,.0f}; bare grpclib: "
            f"{bare_batch.rate:,.0f} reports/s"
            + (f"; {lanes_rate / db_four:.0%} of the db limit on 4 conn." if db_four else ""),
        ),
    ]


async def _load(
    port: int, mode: str, seconds: float, in_flight: int, rate: float, offset: int = 0
) -> dict:
    """Calls for `seconds`: closed loop with `in_flight` callers, or paced at `rate` calls/s
    (open loop, at most `in_flight` outstanding) when `rate` is set. Reports go to the sensors in
    serial order, from the `offset`-th on."""
    serials = [seed.serial_for(n) for n in range(1, SENSORS + 1)]
    channel = Channel("127.0.0.1", port)
    send_status = UnaryUnaryMethod(channel, SEND_STATUS, DeviceStatus, StatusAck)
    send_status_batch = UnaryUnaryMethod(channel, SEND_BATCH, DeviceStatusBatch, BatchAck)
    latencies: list[float] = []
    counts = {"calls": 0, "reports": 0, "errors": 0}
    cursor = offset

    if mode == "warm-up":  # every sensor once, in batches, however long that takes
        seconds = float("inf")

    async def call() -> None:
        nonlocal cursor
        size = 1 if mode == "unary" else BATCH
        chosen = [serials[(cursor + i) % SENSORS] for i in range(size)]
        cursor += size
        began = time.perf_counter()
        try:
            if mode == "unary":
                await send_status(
                    DeviceStatus(serial=chosen[0], software_version="1.0.0"),
                    timeout=CALL_DEADLINE,
                )
            else:
                statuses = [DeviceStatus(serial=s, software_version="1.0.0") for s in chosen]
                await send_status_batch(DeviceStatusBatch(statuses=statuses), timeout=CALL_DEADLINE)
        except Exception:  # any failure (status, reset, deadline) counts as an error
            counts["errors"] += 1
            return
        latencies.append(time.perf_counter() - began)
        counts["calls"] += 1
        counts["reports"] += size

    began = time.perf_counter()
    until = began + seconds
    try:
        if rate:
            gate = asyncio.Semaphore(in_flight)
            tasks = set()

            async def paced() -> None:
                async with gate:
                    await call()

            n = 0
            while (now := time.perf_counter()) < until:
                n += 1
                tasks.add(asyncio.ensure_future(paced()))
                await asyncio.sleep(max(0.0, began + n / rate - now))
            await asyncio.gather(*tasks)
        else:

            async def caller() -> None:
                while time.perf_counter() < until and not (mode == "warm-up" and cursor >= SENSORS):
                    await call()

            await asyncio.gather(*(caller() for _ in range(in_flight)))
    finally:
        channel.close()
    return {**counts, "elapsed": time.perf_counter() - began, "latencies": latencies}


if __name__ == "__main__":
    port, mode, seconds, in_flight, rate, offset = sys.argv[1:]
    reply = plain_asyncio.run(
        _load(int(port), mode, float(seconds), int(in_flight), float(rate), int(offset))
    )
    print(json.dumps(reply))
