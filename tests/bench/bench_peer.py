"""Workload 15, side by side: the daemon and another server of the same wire contract
(`status.DeviceStatusService/SendStatus`), under the same load generator in one run, paced at
150/s, 300/s and half the unary ceiling (workload 2's, when it ran before).

The other server is not ours and is not started here: `DRONESHIELD_BENCH_PEER=PORT` names a
server already listening on 127.0.0.1 (the issue that asked for this compared with a public
NestJS implementation of the task), with the sensors `DS-00000001` … `DS-00100000` provisioned,
none of them reported yet, and release 1.0.0 known to it. Its CPU is read from /proc, as the
daemon's is, for the processes holding the listening socket. For the comparison to hold, run
the bench against the PostgreSQL that server uses (`DATABASE_URL`).

The daemon gets a database of its own in the same state: the same sensors, never heard from,
release 1.0.0 uploaded. Each rate reports to sensors not reported to before (the same ones on
both servers): a first report is a transition, which a server that caches presence must write
through. A last row repeats the 150/s one on sensors already reported: a heartbeat, which such
a server may answer from its cache alone. The two servers take turns, in alternating order
from rate to rate, on a settled database.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .bench_ingest import (
    COLUMNS,
    IN_FLIGHT,
    PACED_RATES,
    QUICK_SECONDS,
    SECONDS,
    SENSORS,
    Measured,
    measure,
)
from .support import Bench, Result, print_table

PEER: str | None = os.environ.get("DRONESHIELD_BENCH_PEER")
GOAL_MS = 50.0  # p99 at every rate (issue 15); at 150/s also below the other server's


def listening_pids(port: int) -> list[int]:
    """The processes holding a TCP socket that listens on `port` (from /proc: no tool needed);
    a server of several processes (a pre-forking master and its workers) is all of them.

    Raises:
        LookupError: none of ours does.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _holds(p, inodes)]
    if not pids:
        raise LookupError(f"no process listens on port {port}")
    return pids


def _holds(process: Path, inodes: set[str]) -> bool:
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:  # gone meanwhile, or not ours to read
        return False
    for fd in descriptors:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


async def run(bench: Bench) -> list[Result]:
    """The paced rows on both servers (see the module's docstring)."""
    if not PEER:
        return [Result("15. side by side with another server", note="DRONESHIELD_BENCH_PEER unset")]
    seconds = QUICK_SECONDS if bench.quick else SECONDS
    ceiling = bench.figures.get("unary_ceiling")
    rates = (*PACED_RATES, ceiling / 2) if ceiling else PACED_RATES
    runs = [(rate, f"{rate:,.0f}/s, first reports") for rate in rates]
    runs.append((PACED_RATES[0], f"{PACED_RATES[0]:,.0f}/s, heartbeats"))
    peer_port = int(PEER)
    peer_pids = listening_pids(peer_port)
    ours: list[Measured] = []
    theirs: list[Measured] = []
    async with bench.unheard(SENSORS) as url:
        async with bench.daemon(url, offline_after=3600) as daemon:
            await bench.settle(url)
            servers = {
                "daemon": (daemon.pid, daemon.grpc_port),
                "other server": (peer_pids, peer_port),
            }
            offset = 0
            for turn, (rate, what) in enumerate(runs):
                # The heartbeat row goes back to the first sensors; each other to new ones.
                start = 0 if what.endswith("heartbeats") else offset
                calls = math.ceil(rate * seconds) + 1
                if start + calls > SENSORS:
                    raise RuntimeError("the run reports to more sensors than the load has")
                for name in sorted(servers, reverse=turn % 2 == 1):  # daemon first, then not
                    pid, port = servers[name]
                    label = f"{name}, {what}"
                    measured = await measure(
                        label, pid, port, "unary", seconds, IN_FLIGHT, rate, start
                    )
                    (ours if name == "daemon" else theirs).append(measured)
                    # The daemon's database; the other server's gets the server-wide CHECKPOINT.
                    await bench.settle(url)
                offset = max(offset, start + calls)
    measured = [m for pair in zip(ours, theirs, strict=True) for m in pair]
    print_table(
        "15. side by side: unary SendStatus paced, the daemon and another server",
        f"the same grpclib load process for both, {IN_FLIGHT} calls in flight at most, "
        f"{seconds:.0f} s each, in turns; the other server listens on port {peer_port} "
        f"(pids {', '.join(map(str, peer_pids))}); CPU = each server's own processes",
        COLUMNS,
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
            goal=f"p99 < {GOAL_MS:.0f} ms"
            + (f" and < the other's {t.p99:,.1f} ms" if light else ""),
            met=m.p99 < (min(GOAL_MS, t.p99) if light else GOAL_MS) and not m.errors,
            note=f"other: {t.rate:,.0f}/s, p50 {t.p50:,.1f}, p99 {t.p99:,.1f} ms, "
            f"{t.errors} errors; CPU/call {m.cpu_ms_per_call:.2f} vs {t.cpu_ms_per_call:.2f} ms",
        )
        for m, t, (rate, _) in zip(ours, theirs, runs, strict=True)
        for light in [rate == PACED_RATES[0]]  # issue 15: below the other's at 150/s
    ]
