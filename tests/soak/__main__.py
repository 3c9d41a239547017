"""`python -m tests.soak` (`just soak`): the whole product at fleet scale on this machine, or with
`--find-max` the largest fleet that passes, searched with shorter runs.

PostgreSQL is DATABASE_URL's server when set, else an embedded one started for the run.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
import trio_asyncio
from rich.table import Table

from tests.bench.support import console
from tests.support.pg_admin import server

from .run import Options, run
from .search import Search

FIND_MAX_MINUTES = 3.0
FIND_MAX_FIRST = 10_000


def _table(report: dict[str, Any]) -> Table:
    table = Table(title="pass criteria")
    for column in ("criterion", "measured", "goal", "met"):
        table.add_column(column)
    for c in report["criteria"]:
        met = {True: "yes", False: "NO", None: "n/a"}[c["met"]]
        table.add_row(c["criterion"], c["measured"], c["goal"], met)
    return table


def _print(report: dict[str, Any]) -> None:
    steady = report["steady"]
    console.print(
        f"pass criteria on the steady state: from minute {steady['from_minute']} "
        f"(a {steady['warmup_s']:g} s warm-up left out), {steady['offered']:,} reports offered"
        if steady["from_minute"] is not None
        else f"the run ended within its {steady['warmup_s']:g} s warm-up: nothing measured"
    )
    console.print(_table(report))
    v = report["verification"]
    console.print(
        f"verification {'ok' if v['ok'] else 'FAILED'}: {v['sampled']} sensors sampled, "
        f"{v['lost']} acknowledged reports lost; {v['expected_offline']} silences past the "
        f"timeout, {v['missed']} not alerted; {v['offline_events']} offline events "
        f"({v['duplicate_events']} duplicates dropped), {v['invented']} invented; "
        f"{v['uncertain_sensors']} sensors with a failed report left out; "
        f"{v['bad_signatures']} bad signatures"
    )
    for key in ("missed_examples", "invented_examples", "examples"):
        if v[key]:
            console.print(f"  {key}: {v[key]}")
    if report["exhausted"]:
        console.print(f"ran out first: {report['exhausted']}")
    console.print(f"written to {report['options']['out']}/soak.json and soak.svg")


async def _main(options: Options, find_max: bool, find_from: int, url: str) -> None:
    async with trio_asyncio.open_loop():
        if not find_max:
            _print(await run(options, url))
            return
        search = Search(find_from, options.sensors)
        while (size := search.next()) is not None:
            trial = replace(
                options,
                sensors=size,
                minutes=min(options.minutes, FIND_MAX_MINUTES),
                out=options.out / f"find-max-{size}",
            )
            console.rule(
                f"find-max: {size:,} sensors, {trial.warmup_periods * trial.period:g} s warm-up "
                f"and {trial.minutes:g} min"
            )
            report = await run(trial, url)
            _print(report)
            search.record(size, report["passed"] and report["verification"]["ok"])
        if search.best is None:
            console.print(f"no fleet size passed (tried from {find_from:,})")
        elif search.failed is None:
            console.print(
                f"every fleet tried passed, up to {search.best:,} sensors: raise --sensors"
            )
        else:
            console.print(
                f"largest fleet that passes: {search.best:,} sensors ({search.failed:,} failed)"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="just soak", description=__doc__)
    defaults = Options()
    parser.add_argument("--sensors", type=int, default=defaults.sensors)
    parser.add_argument("--interval", type=float, default=defaults.interval, help="heartbeat, s")
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="daemon workers")
    parser.add_argument("--period", type=float, default=defaults.period, help="s per line")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="WebSocket clients")
    parser.add_argument(
        "--upload-every", type=float, default=defaults.upload_every, help="s between uploads"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before --minutes that the figures leave out (default: one heartbeat and "
        "one offline timeout, in whole periods)",
    )
    parser.add_argument("--out", type=Path, default=defaults.out, help="JSON and SVG go here")
    parser.add_argument(
        "--find-max",
        action="store_true",
        help=f"double the fleet from --find-from up to --sensors with {FIND_MAX_MINUTES:g}-minute "
        "runs (each after its warm-up) until one fails, then halve the gap between the largest "
        "that passed and the smallest that failed",
    )
    parser.add_argument(
        "--find-from",
        type=int,
        default=FIND_MAX_FIRST,
        help="--find-max's first fleet size (sizes known to pass need not be run again)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    options = Options(
        sensors=args.sensors,
        interval=args.interval,
        minutes=args.minutes,
        workers=args.workers,
        period=args.period,
        clients=args.clients,
        upload_every=args.upload_every,
        out=args.out,
        warmup=args.warmup,
    )
    with server("droneshield-soak-pg-") as url:
        trio.run(_main, options, args.find_max, args.find_from, url)


if __name__ == "__main__":
    main()
