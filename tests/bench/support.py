"""What the benchmarks share: the run's settings (quick or full), throwaway migrated databases on
one PostgreSQL server, the daemon as a separate process with its RSS and CPU readable from
/proc, load generators in their own processes, and the result rows every workload returns.

The daemon always runs in its own process so its memory and CPU are its own: a load generator in
the same interpreter would share its GIL and its event loop and flatter or spoil every figure.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import httpx
import trio
from rich.console import Console
from rich.table import Table

from droneshield.db import bulk, migrate, seed
from droneshield.db.pool import Connection, connect
from tests.support.pg_admin import admin, with_database
from tests.support.processes import Spawned, free_port, spawn, status_kib

# Wide enough for the summary table when the output is a file or a pipe (CI logs, `tee`).
console = Console(width=None if sys.stdout.isatty() else 200)

READY_TIMEOUT: Final = 120.0  # seconds for a daemon to answer /readyz (recovery at 1M included)
TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    """One row of the summary table. Latencies in milliseconds; `met` is None where the
    workload has no goal or the goal is not a single comparison."""

    workload: str
    rate: float | None = None
    unit: str = ""
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    rss_mb: float | None = None
    goal: str = ""
    met: bool | None = None
    note: str = ""


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 of `samples` (seconds) in milliseconds."""
    if len(samples) < 2:
        only = samples[0] * 1000 if samples else float("nan")
        return only, only, only
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def rss_mb(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory."""
    return status_kib(pid, "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def _stat_cpu(stat: str) -> float:
    """User + system CPU seconds in a /proc/<pid>/stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_cpu_seconds() -> float:
    """User + system CPU the PostgreSQL processes now running on this host have used so far
    (a workload's difference counts its connections' backends, which outlive it)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        if text.split("(", 1)[1].startswith("postgres)"):
            total += _stat_cpu(text)
    return total


@dataclass
class DaemonProcess:
    """`droneshield serve` running in its own process, ready."""

    spawned: Spawned
    grpc_port: int
    http_port: int
    ready_after: float  # seconds from spawn to the first 200 from /readyz

    @property
    def pid(self) -> int:
        return self.spawned.process.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    async def recovered(self, online: int) -> None:
        """Wait until start-up recovery has put `online` sensors in the presence wheel (read
        from /metrics): it runs after /readyz answers, ~5 s of the daemon's CPU at a million,
        and the first rows measured against a daemon just started paid for it (the first
        page's p99 38 ms, CPU 11.5 ms a request, against ~3 for the same page later). For
        daemons whose sensors do not expire meanwhile (a long `offline_after`)."""
        with trio.fail_after(READY_TIMEOUT):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.http_port}") as client:
                while True:
                    if self.spawned.process.returncode is not None:
                        raise RuntimeError(f"the daemon exited:\n{self.spawned.output()}")
                    metrics = (await client.get("/metrics")).text
                    armed = next(
                        (
                            float(line.split()[1])
                            for line in metrics.splitlines()
                            if line.startswith("droneshield_wheel_sensors ")
                        ),
                        0.0,
                    )
                    if armed >= online:
                        return
                    await trio.sleep(0.25)


# The state `Bench.seeded` gives a fleet (and `Bench.restore` gives back): 1 in 100 never seen,
# 1 in 10 offline, a third on 1.10.0 and the rest on 1.0.0.
_SEEDED_SEEN: Final = "id % 100 <> 1"
_SEEDED_ONLINE: Final = "(id % 10 <> 0)"


def _seeded_version(sensor_id: str = "id") -> str:
    return f"(CASE WHEN {sensor_id} % 3 = 0 THEN '1.10.0' ELSE '1.0.0' END)"


_SEEDED_VERSION: Final = _seeded_version()
_SEEDED_KEY: Final = (
    f"(SELECT w.version_key FROM software w WHERE w.version = {_seeded_version('sensor.id')})"
)


@dataclass
class Bench:
    """The run: quick or full, the PostgreSQL server, and the databases made so far."""

    quick: bool
    server_url: str
    figures: dict[str, float] = field(default_factory=dict, init=False)
    """Figures later workloads are judged against (the database's own limit, say)."""
    _template: str = field(default="", init=False)
    _seeded: dict[int, str] = field(default_factory=dict, init=False)

    def scaled(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    async def _admin(self, *statements: str) -> None:
        await trio.to_thread.run_sync(admin, self.server_url, *statements)

    async def _create(self, label: str) -> tuple[str, str]:
        """A new database cloned from the migrated template: (name, url)."""
        if not self._template:
            self._template = f"droneshield_bench_tpl_{uuid.uuid4().hex[:8]}"
            await self._admin(f"CREATE DATABASE {self._template}")
            async with connect(with_database(self.server_url, self._template)) as conn:
                await migrate.migrate(conn)
        name = f"droneshield_bench_{label}_{uuid.uuid4().hex[:8]}"
        await self._admin(f"CREATE DATABASE {name} TEMPLATE {self._template}")
        return name, with_database(self.server_url, name)

    @asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh migrated database, dropped afterwards."""
        name, url = await self._create("scratch")
        try:
            yield url
        finally:
            await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @asynccontextmanager
    async def unheard(self, count: int, releases: Sequence[str] = ("1.0.0",)) -> AsyncIterator[str]:
        """A fresh database (`database`) of `count` sensors never heard from, with `releases`
        uploaded: a fleet as it is before its first report."""
        async with self.database() as url:
            async with connect(url) as conn:
                await seed.seed(conn, count)
                await _upload(conn, releases)
            yield url

    @property
    def fleet(self) -> int:
        """Sensors in the fleet-sized database: a million, or 100k with --quick."""
        return self.scaled(1_000_000, 100_000)

    async def seeded(self, count: int) -> str:
        """A migrated database with `count` sensors in the state of a fleet that has run for a
        while: releases 1.0.0 and 1.10.0 uploaded, sensors reporting them, 1 in 10 offline and
        1 in 100 never heard from, spread over 200 sites. Shared by the workloads that need
        that many (seeding a million takes seconds; once is enough). Workloads may change
        sensors' state, never the set."""
        if count not in self._seeded:
            _, url = await self._create(str(count))
            async with connect(url) as conn:
                await seed.seed(conn, count)
                await _upload(conn, ("1.0.0", "1.10.0"))
                await conn.execute(
                    "UPDATE sensor SET site = 'site-' || lpad((id % 200)::text, 3, '0'), "
                    f"online = {_SEEDED_ONLINE}, version = {_SEEDED_VERSION}, "
                    f"version_key = {_SEEDED_KEY}, "
                    "last_seen_at = now() - (id % 20) * interval '1 second' "
                    "- (id % 10 = 0)::int * (id % 7200) * interval '1 second', "
                    "status_changed_at = now() - (id % 3600) * interval '1 second' "
                    f"WHERE {_SEEDED_SEEN}"
                )
                await conn.execute("VACUUM ANALYZE sensor")
            self._seeded[count] = url
        return self._seeded[count]

    async def restore(self, url: str) -> None:
        """Give the sensors a workload has reported for since `seeded` their seeded status and
        version back (the seen ones: the never-seen stay seen): a quick run's ingest (workload
        2) reports every sensor of its 100k fleet, on one version, and the listings of offline
        sensors and of the other version (workload 6) then had none to list. Rows it changes
        are vacuumed, as `settle` would have done had they changed before it."""
        async with connect(url) as conn:
            status = await conn.execute(
                f"UPDATE sensor SET online = {_SEEDED_ONLINE}, version = {_SEEDED_VERSION}, "
                f"version_key = {_SEEDED_KEY}, status_changed_at = CASE WHEN online "
                f"<> {_SEEDED_ONLINE} THEN now() ELSE status_changed_at END "
                f"WHERE {_SEEDED_SEEN} AND (online <> {_SEEDED_ONLINE} "
                f"OR version IS DISTINCT FROM {_SEEDED_VERSION})"
            )
            if status != "UPDATE 0":
                await conn.execute("VACUUM (ANALYZE) sensor")

    async def online(self, url: str) -> int:
        """The sensors online in `url`'s database: what a daemon's start-up recovery arms."""
        async with connect(url) as conn:
            return int(await conn.fetchval("SELECT count(*) FROM sensor WHERE online"))

    async def settle(self, *urls: str) -> float:
        """Do now the upkeep that the writes of earlier workloads left the shared databases
        (vacuum, fresh statistics, a checkpoint), so that it does not land in the next
        workload's figures: on two cores shared by PostgreSQL, the daemon and the load, an
        autovacuum of the million-sensor table (its trigram index included) or the checkpoint
        after a write-heavy row took a core in the middle of latency runs (in one full run the
        listings' median p50 doubled, 5.4 → 9.8 ms, and the paced p99 at 300/s was 55 ms
        against 9-15 ms on the same table vacuumed). A real deployment does the same upkeep
        beside its load, on its own database host. `urls`: a workload's own databases, just
        filled, settled instead of the shared ones. Returns the seconds it took."""
        began = time.perf_counter()
        for url in urls or self._seeded.values():
            async with connect(url) as conn:
                await conn.execute("VACUUM (ANALYZE)")
        async with connect(self.server_url) as conn:
            try:
                await conn.execute("CHECKPOINT")
            except asyncpg.InsufficientPrivilegeError:
                console.print("[yellow]no CHECKPOINT: DATABASE_URL's role may not run one")
        return time.perf_counter() - began

    def drop_all(self) -> None:
        """Drop the shared databases (the run is over; called outside trio)."""
        names = [urlsplit(u).path.lstrip("/") for u in self._seeded.values()]
        if self._template:
            names.append(self._template)
        admin(self.server_url, *(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in names))

    @asynccontextmanager
    async def daemon(
        self, url: str, *, env: dict[str, str] | None = None, **settings: Any
    ) -> AsyncIterator[DaemonProcess]:
        """`droneshield serve` on free ports against `url`, ready; stopped on leaving.
        `settings` become `--name value` flags (underscores as dashes); `env` adds variables.

        The indexes a large seed left to build are built first: the daemon would build them in
        the background (search_index.py), beside the workload it is started for."""
        await bulk.build_deferred(url)
        grpc_port, http_port = free_port(), free_port()
        with tempfile.TemporaryDirectory(prefix="droneshield-bench-") as data:
            flags = {"data_dir": data, "grpc_port": grpc_port, "http_port": http_port}
            flags |= settings
            argv = [sys.executable, "-m", "droneshield", "serve"]
            for name, value in flags.items():
                argv += [f"--{name.replace('_', '-')}", str(value)]
            variables = {**os.environ, "DATABASE_URL": url, "DRONESHIELD_LOG_LEVEL": "WARNING"}
            began = time.perf_counter()
            async with spawn(argv, env=variables | (env or {})) as spawned:
                await _ready(spawned, http_port)
                yield DaemonProcess(spawned, grpc_port, http_port, time.perf_counter() - began)


async def _ready(spawned: Spawned, http_port: int) -> None:
    with trio.fail_after(READY_TIMEOUT):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            while True:
                if spawned.process.returncode is not None:
                    raise RuntimeError(f"the daemon exited:\n{spawned.output()}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def run_client(module: str, *args: object) -> Any:
    """Run `python -m module args…` (a load generator) and return the JSON it prints last."""
    done = await trio.run_process(
        [sys.executable, "-m", module, *map(str, args)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def print_table(
    title: str, workload: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """A detail table for one workload, printed as it finishes."""
    table = Table(title=title, caption=workload)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 or value == 0 else f"{value:,.2f}"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summary_table(results: Sequence[Result], title: str) -> Table:
    table = Table(title=title)
    for column in ("workload", "rate", "unit", "p50 ms", "p95 ms", "p99 ms", "RSS MB", "goal"):
        table.add_column(column, justify="left" if column in ("workload", "goal") else "right")
    table.add_column("met")
    table.add_column("note")
    for r in results:
        table.add_row(
            r.workload,
            _cell(r.rate),
            r.unit,
            _cell(r.p50),
            _cell(r.p95),
            _cell(r.p99),
            _cell(r.rss_mb),
            r.goal,
            _cell(r.met),
            r.note,
        )
    return table


async def _upload(conn: Connection, releases: Sequence[str]) -> None:
    """Rows for `releases` as uploads leave them (the files themselves are not needed)."""
    await conn.execute(
        "INSERT INTO software (version, filename, path, size_bytes, sha256) "
        "SELECT v, v || '.pdf', v || '.pdf', 1, repeat('0', 64) FROM unnest($1::text[]) AS v",
        list(releases),
    )
