"""`python -m tests.bench [--quick] [name ...]`: run the workloads, print one table with each
figure beside its goal, and write the same as JSON (tests/bench/results/latest.json).

PostgreSQL is DATABASE_URL's server when set, else an embedded one started for the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import trio
import trio_asyncio

from droneshield.db.pool import connect
from tests.support.pg_admin import server

from .support import Bench, Result, console, summary_table

# In this order: the database's own limit first, as every other figure is compared to it.
WORKLOADS = (
    "bench_database",
    "bench_ingest",
    "bench_peer",
    "bench_live",
    "bench_presence",
    "bench_http",
    "bench_upload",
    "bench_startup",
    "bench_idle",
    "bench_wheel",
    "bench_haproxy",
    "bench_hostile",
    "bench_webhooks",
    "bench_relay",
)
RESULTS = Path(__file__).parent / "results" / "latest.json"


def _machine() -> dict[str, object]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


async def _run(bench: Bench, names: list[str]) -> tuple[list[Result], str]:
    results: list[Result] = []
    async with trio_asyncio.open_loop():
        async with connect(bench.server_url) as conn:
            postgres = await conn.fetchval("SHOW server_version")
        for name in names:
            console.rule(f"[bold]{name}")
            console.print(f"settled the shared databases in {await bench.settle():.1f} s")
            began = time.perf_counter()
            module = importlib.import_module(f"tests.bench.{name}")
            results += await module.run(bench)
            console.print(f"{name}: {time.perf_counter() - began:.0f} s")
    return results, postgres


def main() -> None:
    parser = argparse.ArgumentParser(prog="just bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small workloads (< 2 minutes)")
    parser.add_argument("names", nargs="*", help="run only workloads whose name contains one")
    args = parser.parse_args()
    names = [w for w in WORKLOADS if not args.names or any(n in w for n in args.names)]
    began = time.perf_counter()
    with server("droneshield-bench-pg-") as url:
        bench = Bench(quick=args.quick, server_url=url)
        try:
            results, postgres = trio.run(_run, bench, names)
        finally:
            bench.drop_all()
    elapsed = time.perf_counter() - began
    machine = {**_machine(), "postgres": postgres}
    title = (
        f"droneshield bench{' --quick' if args.quick else ''}: {machine['cores']} cores "
        f"({machine['cpu']}), Python {machine['python']}, PostgreSQL {postgres}, "
        f"{elapsed:.0f} s"
    )
    console.print(summary_table(results, title))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "seconds": round(elapsed, 1),
                "machine": machine,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    console.print(f"written to {RESULTS.relative_to(Path.cwd())}")


main()
