"""`python -m emitter compat | fleet | gateways | load | demo-uploads`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from .backoff import BASE_DEFAULT, CAP_DEFAULT, Backoff
from .compat import run_compat
from .demo_uploads import upload, write
from .fleet import run_fleet
from .gateway import run_gateways
from .link import TIMEOUT_DEFAULT, Link, client_tls
from .load import run_load
from .schedule import FleetShape
from .serials import from_file, wait_for_serials

log = logging.getLogger("emitter")

TARGET_DEFAULT = "127.0.0.1:50051"
URL_DEFAULT = "http://127.0.0.1:8000"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=TARGET_DEFAULT, help="daemon gRPC HOST:PORT")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="read serials from this database's sensor table (default: env DATABASE_URL)",
    )
    parser.add_argument(
        "--serials-file", type=Path, help="read serials from this file instead, one per line"
    )
    parser.add_argument("--limit", type=int, help="use at most this many sensors")
    parser.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT_DEFAULT, help="seconds per call")
    parser.add_argument(
        "--backoff-base", type=float, default=BASE_DEFAULT, help="first backoff pause, seconds"
    )
    parser.add_argument(
        "--backoff-max", type=float, default=CAP_DEFAULT, help="longest backoff pause, seconds"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    parser.add_argument(
        "--token",
        default=os.environ.get("DRONESHIELD_GRPC_TOKEN"),
        help="gRPC bearer token (default: env DRONESHIELD_GRPC_TOKEN)",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        help="talk TLS to the daemon, trusting this PEM CA bundle (default: plaintext)",
    )
    parser.add_argument("--cert-file", type=Path, help="client certificate (PEM), for mTLS")
    parser.add_argument("--key-file", type=Path, help="private key of --cert-file (PEM)")


def _shape(parser: argparse.ArgumentParser, shape: FleetShape) -> None:
    parser.add_argument("--interval", type=float, default=shape.interval, help="heartbeat, s")
    parser.add_argument("--jitter", type=float, default=shape.jitter, help="± interval fraction")
    parser.add_argument(
        "--churn", type=float, default=shape.churn, help="share silent at any moment"
    )
    parser.add_argument(
        "--silence", type=float, default=shape.silence, help="mean silent spell, seconds"
    )
    parser.add_argument("--never", type=float, default=shape.never, help="share that never reports")
    parser.add_argument(
        "--upgrade-every",
        type=float,
        default=shape.upgrade_every,
        help="mean seconds between upgrades of one sensor (0: never)",
    )


def _fleet_shape(args: argparse.Namespace) -> FleetShape:
    return FleetShape(
        interval=args.interval,
        jitter=args.jitter,
        churn=args.churn,
        silence=args.silence,
        never=args.never,
        upgrade_every=args.upgrade_every,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emitter",
        description="Simulate drone-detection sensors reporting to droneshield over gRPC.",
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    compat = modes.add_parser(
        "compat", help="like the original simulator: one random sensor per interval"
    )
    _common(compat)
    compat.add_argument("--interval", type=float, default=5.0, help="seconds between reports")

    shape = FleetShape()
    fleet = modes.add_parser(
        "fleet", help="every sensor heartbeats; churn, silent sensors, upgrades"
    )
    _common(fleet)
    _shape(fleet, shape)
    fleet.add_argument("--concurrency", type=int, default=64, help="calls in flight at most")
    fleet.add_argument("--report-every", type=float, default=30.0, help="census period, s")

    gateways = modes.add_parser(
        "gateways", help="the fleet through G gateways batching heartbeats; records acks"
    )
    _common(gateways)
    _shape(gateways, shape)
    gateways.add_argument("--gateways", type=int, default=100, help="gateways (connections)")
    gateways.add_argument("--flush", type=float, default=1.0, help="seconds between sends")
    gateways.add_argument("--batch-max", type=int, default=1000, help="reports per call")
    gateways.add_argument("--period", type=float, default=60.0, help="seconds per record line")
    gateways.add_argument(
        "--gap-min", type=float, default=5.0, help="record silences at least this long, s"
    )
    gateways.add_argument(
        "--record", type=Path, required=True, help="append the JSON-lines record here"
    )

    load = modes.add_parser("load", help="N sensors at a target rate; prints rate and latency")
    _common(load)
    load.set_defaults(limit=1000)
    load.add_argument(
        "--rate", type=float, default=1000.0, help="reports per second (0: unlimited)"
    )
    load.add_argument("--rpc", choices=("unary", "batch"), default="unary")
    load.add_argument("--batch-size", type=int, default=500, help="statuses per batch call")
    load.add_argument("--concurrency", type=int, default=8, help="calls in flight at most")
    load.add_argument("--report-every", type=float, default=2.0, help="seconds per line")

    demo = modes.add_parser(
        "demo-uploads", help="upload small release PDFs for the versions the emitter sends"
    )
    demo.add_argument("--url", default=URL_DEFAULT, help="daemon HTTP base URL")
    demo.add_argument(
        "--api-key",
        default=os.environ.get("DRONESHIELD_API_KEY"),
        help="bearer key (default: env DRONESHIELD_API_KEY)",
    )
    demo.add_argument("--out", type=Path, help="write the PDFs here instead of uploading")
    demo.add_argument(
        "--ca-file",
        type=Path,
        help="verify an https --url with this PEM CA bundle (default: system CAs)",
    )
    demo.add_argument("--log-level", default="INFO", help="logging level")
    return parser


async def _serials(args: argparse.Namespace, backoff: Backoff) -> list[str]:
    if args.serials_file is not None:
        return from_file(args.serials_file)[: args.limit]
    if not args.database_url:
        raise SystemExit("emitter: give --database-url (or DATABASE_URL) or --serials-file")
    return await wait_for_serials(args.database_url, args.limit, backoff)


async def _emit(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    backoff = Backoff(rng, base=args.backoff_base, cap=args.backoff_max)
    serials = await _serials(args, backoff)
    tls = client_tls(args.ca_file, args.cert_file, args.key_file)
    link = Link(args.target, backoff, timeout=args.timeout, tls=tls, token=args.token)
    try:
        if args.mode == "compat":
            await run_compat(link, serials, interval=args.interval, rng=rng)
        elif args.mode == "fleet":
            await run_fleet(
                link,
                serials,
                _fleet_shape(args),
                concurrency=args.concurrency,
                report_every=args.report_every,
                rng=rng,
            )
        elif args.mode == "gateways":
            await _gateways(args, link, backoff, tls, serials, rng)
        else:
            await run_load(
                link,
                serials,
                rate=args.rate,
                rpc=args.rpc,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                report_every=args.report_every,
                rng=rng,
            )
    finally:
        link.close()


async def _gateways(
    args: argparse.Namespace,
    first: Link,
    backoff: Backoff,
    tls: ssl.SSLContext | None,
    serials: list[str],
    rng: random.Random,
) -> None:
    """Gateway mode: `first` is gateway 0's connection, the others get their own."""
    links = [first] + [
        Link(
            args.target,
            Backoff(rng, base=args.backoff_base, cap=args.backoff_max),
            timeout=args.timeout,
            tls=tls,
            token=args.token,
        )
        for _ in range(args.gateways - 1)
    ]
    try:
        with args.record.open("a") as out:
            await run_gateways(
                links,
                serials,
                _fleet_shape(args),
                flush=args.flush,
                batch_max=args.batch_max,
                period=args.period,
                gap_min=args.gap_min,
                record_to=out,
                rng=rng,
            )
    finally:
        for link in links[1:]:
            link.close()


async def _until_stopped(args: argparse.Namespace) -> None:
    """Run the mode until it fails, SIGINT/SIGTERM arrives or `--duration` passes; the last two
    are a normal end."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    reasons: list[str] = []

    def stop(reason: str) -> None:
        reasons.append(reason)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signal.Signals(signum).name)
    if args.duration is not None:
        loop.call_later(args.duration, stop, f"{args.duration:g} s elapsed")
    try:
        await _emit(args)
    except asyncio.CancelledError:
        if not reasons:
            raise
        log.info("stopped: %s", reasons[0])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # each upload is logged here already
    if args.mode == "demo-uploads":
        if args.out is not None:
            for path in write(args.out):
                print(path)
            return 0
        return 0 if upload(args.url, args.api_key, ca_file=args.ca_file) else 1
    try:
        asyncio.run(_until_stopped(args))
    except ValueError as exc:  # a bad option value (FleetShape, --target)
        print(f"emitter: {exc}", file=sys.stderr)
        return 2
    return 0
