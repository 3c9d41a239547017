"""Workload 15, side by side: the daemon and another server of the same wire contract
(`status.DeviceStatusService/SendStatus`), under the same load generator in one run, paced at
150/s, 300/s and half the unary ceiling (workload 2's, when it ran before), rates alternated
between the two.

The other server is not ours and is not started here: `DRONESHIELD_BENCH_PEER=PORT` names a
server already listening on 127.0.0.1 (the issue that asked for this compared with a public
NestJS implementation of the task), with the sensors `DS-00000001` … `DS-00100000` provisioned
and release 1.0.0 known to it. Its CPU is read from /proc, as the daemon's is, for the process
listening on that port. For the comparison to hold, run the bench against the PostgreSQL that
server uses (`DATABASE_URL`).

Each rate reports to sensors not reported to before in the run (the same ones on both servers):
a first report is what a server that caches presence must write through. A last row repeats
the 150/s one on sensors already reported: a heartbeat, which such a server may answer from its
cache alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bench_ingest import IN_FLIGHT, PACED_RATES, QUICK_SECONDS, SECONDS, SENSORS, measure
from .support import Bench, Result, print_table

PEER: str | None = os.environ.get("DRONESHIELD_BENCH_PEER")


def listening_pid(port: int) -> int:
    """The process with a TCP socket listening on `port` (from /proc: no tool needed).

    Raises:
        LookupError: no process of ours listens there.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (process / "fd").iterdir()):
                return int(process.name)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    raise LookupError(f"no process listens on port {port}")


async def run(bench: Bench) -> list[Result]:
    if not PEER:
        return [Result("15. side by side with another server", note="DRONESHIELD_BENCH_PEER unset")]
    peer_port = int(PEER)
    peer_pid = listening_pid(peer_port)
    seconds = QUICK_SECONDS if bench.quick else SECONDS
    ceiling = bench.figures.get("unary_ceiling")
    rates = (*PACED_RATES, ceiling / 2) if ceiling else PACED_RATES
    url = await bench.seeded(bench.fleet)
    ours, theirs = [], []
    async with bench.daemon(url, offline_after=3600) as daemon:
        await daemon.recovered(await bench.online(url))
        await bench.settle()
        offset = 0
        runs = [(rate, f"{rate:,.0f}/s, first reports") for rate in rates]
        runs.append((PACED_RATES[0], f"{PACED_RATES[0]:,.0f}/s, heartbeats"))
        for rate, what in runs:
            # The heartbeat row goes back to the first sensors; each other row to new ones.
            start = 0 if what.endswith("heartbeats") else offset
            if start + int(rate * seconds) > SENSORS:
                raise RuntimeError("the run reports to more sensors than the load has")
            ours.append(
                await measure(
                    f"daemon, {what}",
                    daemon.pid,
                    daemon.grpc_port,
                    "unary",
                    seconds,
                    IN_FLIGHT,
                    rate,
                    start,
                )
            )
            theirs.append(
                await measure(
                    f"other server, {what}",
                    peer_pid,
                    peer_port,
                    "unary",
                    seconds,
                    IN_FLIGHT,
                    rate,
                    start,
                )
            )
            offset = max(offset, start + int(rate * seconds) + 1)
    measured = [m for pair in zip(ours, theirs, strict=True) for m in pair]
    print_table(
        "15. side by side: unary SendStatus paced, the daemon and another server",
        f"the same grpclib load process for both, {IN_FLIGHT} calls in flight at most, "
        f"{seconds:.0f} s each, rates alternated; the other server listens on port "
        f"{peer_port} (pid {peer_pid}); CPU = each server process's own",
        ["run", "calls", "reports/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/call", "errors"],
        [m.row() for m in measured],
    )
    return [
        Result(
            f"15. paced {m.label.removeprefix('daemon, ')}: daemon vs other server",
            m.rate,
            "calls/s",
            m.p50,
            m.p95,
            m.p99,
            goal=f"p99 < the other's {t.p99:,.1f} ms",
            met=m.p99 < t.p99 and not m.errors,
            note=f"other: p50 {t.p50:,.1f}, p99 {t.p99:,.1f} ms, {t.errors} errors; CPU/call "
            f"{m.cpu_ms_per_call:.2f} vs {t.cpu_ms_per_call:.2f} ms",
        )
        for m, t in zip(ours, theirs, strict=True)
    ]
