"""Workload 8, getting a fleet in and a daemon up: seeding the fleet with COPY into an empty
database, importing as many sensors from a CSV file (`droneshield sensors import`, a process,
with sites and labels) into another (then its search index, which the import leaves to a daemon
to build CONCURRENTLY after its commit, built as a daemon does), then starting a daemon against
a fleet that is mostly online, which must rebuild its presence wheel from the database before
it reports ready; and how fast `droneshield --help` answers (the CLI imports what a command
needs only when it runs).

Start-up is measured as the image runs it: with the bytecode of the project and its
dependencies compiled at install (the Dockerfile's UV_COMPILE_BYTECODE and compileall), which
`compile_bytecode` does for this environment first. A second start against the same fleet reads
no compiled bytecode at all (an empty PYTHONPYCACHEPREFIX), for what compiling ~1,000 modules
from source adds to every start where nothing could be cached.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import trio

from droneshield.db import bulk, seed
from droneshield.db.pool import connect
from tests.support.processes import ROOT

from .support import READY_TIMEOUT, Bench, Result, print_table

SEED_GOAL_FLEET = 1_000_000  # the seeding goal is set for a million sensors
HELP_GOAL = 0.5  # seconds for `droneshield --help`
HELP_RUNS = 5


def compile_bytecode() -> None:
    """Compile the project's and its dependencies' modules, as the image does at build (a
    no-op where they are compiled already; where PYTHONDONTWRITEBYTECODE is set nothing else
    would ever write them)."""
    packages = sysconfig.get_paths()["purelib"]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", packages, "droneshield", "emitter"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )


def help_seconds() -> float:
    """Median wall time of `python -m droneshield --help`, interpreter start included."""
    times = []
    for _ in range(HELP_RUNS):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "droneshield", "--help"], check=True, capture_output=True
        )
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def import_seconds(url: str, fleet: int) -> float:
    """Wall time of `droneshield sensors import` of a `fleet`-row CSV (UUID-like serials, 200
    sites, labels) into the empty database at `url`, interpreter start included."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fleet.csv"
        with path.open("w") as f:
            f.write("serial,site,label\n")
            for n in range(fleet):
                f.write(f"{n:08x}-5c1a-4b7e-9d5e-{n:012x},site-{n % 200:03d},mast {n}\n")
        env = {**os.environ, "DATABASE_URL": url}
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "droneshield", "sensors", "import", str(path)],
            check=True,
            capture_output=True,
            env=env,
        )
        return time.perf_counter() - began


async def run(bench: Bench) -> list[Result]:
    fleet = bench.fleet
    async with bench.database() as url, connect(url) as conn:
        began = time.perf_counter()
        created = await seed.seed(conn, fleet)
        seeding = time.perf_counter() - began
    assert created == fleet
    async with bench.database() as url:
        importing = import_seconds(url, fleet)
        began = time.perf_counter()
        assert await bulk.build_deferred(url)  # as a daemon does after the import
        indexing = time.perf_counter() - began
    url = await bench.seeded(fleet)
    async with connect(url) as conn:
        online = await conn.fetchval("SELECT count(*) FROM sensor WHERE online")
    await trio.to_thread.run_sync(compile_bytecode)
    with tempfile.TemporaryDirectory(prefix="droneshield-no-bytecode-") as empty:
        async with bench.daemon(url, env={"PYTHONPYCACHEPREFIX": empty}) as daemon:
            uncompiled = daemon.ready_after
    async with bench.daemon(url, log_level="INFO") as daemon:
        ready = daemon.ready_after
        waited = time.perf_counter()
        with trio.fail_after(READY_TIMEOUT):  # recovery runs after the daemon is ready
            await daemon.spawned.wait_for("presence recovered")
        recovered = ready + time.perf_counter() - waited  # at most: the line may be older
        rss = daemon.rss_mb()
    helping = help_seconds()
    print_table(
        "8. seeding and start-up",
        f"seed: {fleet:,} sensors by COPY into an empty migrated database; start-up: "
        f"`droneshield serve` as a process against {online:,} online sensors, spawn to the "
        "first 200 from /readyz (interpreter start and wheel recovery included; bytecode "
        "compiled as in the image, and once without)",
        ["step", "seconds", "per second", "RSS MB"],
        [
            ("seed", seeding, fleet / seeding, None),
            ("sensors import (CSV)", importing, fleet / importing, None),
            ("its search index, built after it", indexing, fleet / indexing, None),
            ("start-up to ready", ready, None, None),
            ("start-up to ready, no compiled bytecode", uncompiled, None, None),
            ("start-up to wheel recovered", recovered, online / recovered, rss),
            ("droneshield --help", helping, None, None),
        ],
    )
    return [
        Result(
            f"8. seed {fleet:,} sensors",
            fleet / seeding,
            "sensors/s",
            goal=f"{seeding:.1f} s (< 10 s at 1M)",
            met=seeding < 10 if fleet >= SEED_GOAL_FLEET else None,
        ),
        Result(
            f"8. sensors import {fleet:,} (CSV)",
            fleet / importing,
            "sensors/s",
            goal=f"{importing:.1f} s (< 10 s at 1M), search index {indexing:.1f} s after",
            met=importing < 10 if fleet >= SEED_GOAL_FLEET else None,
        ),
        Result(
            f"8. start-up with {online:,} online",
            online / ready,
            "recovered/s",
            rss_mb=rss,
            goal=f"ready in {ready:.1f} s (< 2 s at 1M), wheel in {recovered:.1f} s",
            met=ready < 2.0 if fleet >= SEED_GOAL_FLEET else None,
        ),
        Result(
            "8. droneshield --help",
            1 / helping,
            "answers/s",
            goal=f"{helping:.2f} s (< {HELP_GOAL} s)",
            met=helping < HELP_GOAL,
        ),
    ]
