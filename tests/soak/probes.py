"""What the soak samples every period besides the children's own lines: CPU and memory of the
daemon (its workers included) and of the PostgreSQL backends serving the soak's database, the
emitter's CPU and the whole machine's, the database's size, and the writer's group commits from
the daemon's /metrics. The machine's share matters on a small host: the emitter runs beside the
daemon, and all cores can be busy while neither the daemon nor PostgreSQL uses a whole one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from droneshield.db.pool import connect
from tests.bench.support import TICKS, cpu_seconds, rss_mb
from tests.support.processes import child_pids

COMMIT_METRIC = "droneshield_commit_seconds"


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (the daemon's workers)."""
    pids = [pid]
    for child in child_pids(pid):
        pids += tree(child)
    return pids


def _sum(pids: list[int], figure: Callable[[int], float]) -> float:
    """`figure` summed over `pids`, skipping processes that ended since they were listed."""
    total = 0.0
    for pid in pids:
        try:
            total += figure(pid)
        except (OSError, AssertionError):  # /proc/<pid> gone, or no VmRSS in a zombie
            pass
    return total


def _pss_mb(pids: list[int]) -> float:
    """Proportional set size: shared memory (PostgreSQL's shared buffers, the daemon's
    copy-on-write pages) split between the processes mapping it, so the sum is not inflated."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return total / 1024


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores so far, from /proc/stat (idle and iowait are not
    busy)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already counted in user
    idle = fields[3] + fields[4]
    return (total - idle) / TICKS, total / TICKS


@dataclass
class Sample:
    at: float
    daemon_cpu: float  # seconds so far
    daemon_mb: float  # resident, workers included
    pg_cpu: float  # seconds so far, of the backends alive now
    pg_mb: float  # proportional (shared buffers split between backends)
    emitter_cpu: float  # seconds so far
    machine: tuple[float, float]  # (busy, total) seconds of all cores so far
    db_mb: float
    commit: tuple[float, float]  # (seconds, count) of group commits so far


async def sample(
    at: float, daemon_pid: int, emitter_pid: int, http_port: int, database_url: str
) -> Sample:
    """One reading. PostgreSQL is the backends connected to the soak's database: on a shared
    server the rest is other people's; its background writer and WAL writer are left out."""
    async with connect(database_url) as conn:
        backends = [
            r["pid"]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )
        ]
        db_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    daemon = tree(daemon_pid)
    return Sample(
        at,
        _sum(daemon, cpu_seconds),
        _sum(daemon, rss_mb),
        _sum(backends, cpu_seconds),
        _pss_mb(backends),
        _sum([emitter_pid], cpu_seconds),
        machine_cpu(),
        db_bytes / 2**20,
        await _commits(http_port),
    )


async def _commits(http_port: int) -> tuple[float, float]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"http://127.0.0.1:{http_port}/metrics")).text
    except httpx.HTTPError:
        return (0.0, 0.0)
    values: dict[str, Any] = {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    return values.get(COMMIT_METRIC + "_sum", 0.0), values.get(COMMIT_METRIC + "_count", 0.0)
