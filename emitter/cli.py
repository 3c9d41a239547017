"""`python -m emitter compat | fleet | gateways | load | demo-uploads`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import signal
import socket
import ssl
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from droneshield import runfile

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


class _HelpFormatter(argparse.HelpFormatter):
    """Each flag's default after its help, unless it has none or the help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _count(text: str) -> int:
    """A whole number of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    """A finite number of seconds above 0 (argparse type): `nan` or `0` would send nothing, or
    everything at once."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def _find_dev(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DRONESHIELD_DATA_DIR", ".data")),
        help="where a running `droneshield dev` (`just dev`) left its addresses (env "
        "DRONESHIELD_DATA_DIR)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    _find_dev(parser)
    parser.add_argument(
        "--target",
        help=f"daemon gRPC HOST:PORT (default: a running `just dev`'s, else {TARGET_DEFAULT})",
    )
    parser.add_argument(
        "--database-url",
        help="read serials from this database's sensor table (default: env DATABASE_URL, "
        "else a running `just dev`'s)",
    )
    parser.add_argument(
        "--serials-file", type=Path, help="read serials from this file instead, one per line"
    )
    parser.add_argument("--limit", type=_count, help="use at most this many sensors")
    parser.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    parser.add_argument(
        "--duration", type=_seconds, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=TIMEOUT_DEFAULT, help="seconds per call"
    )
    parser.add_argument(
        "--backoff-base", type=float, default=BASE_DEFAULT, help="first backoff pause, seconds"
    )
    parser.add_argument(
        "--backoff-max", type=float, default=CAP_DEFAULT, help="longest backoff pause, seconds"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    parser.add_argument("--token", help="gRPC bearer token (default: env DRONESHIELD_GRPC_TOKEN)")
    parser.add_argument(
        "--ca-file",
        type=Path,
        help="talk TLS to the daemon, trusting this PEM CA bundle (default: plaintext)",
    )
    parser.add_argument(
        "--supervisor-fd",
        type=int,
        metavar="FD",
        help="stop when this inherited socket reads end-of-file (set by `droneshield dev`, so "
        "the emitter stops with it however it ends)",
    )
    parser.add_argument("--cert-file", type=Path, help="client certificate (PEM), for mTLS")
    parser.add_argument("--key-file", type=Path, help="private key of --cert-file (PEM)")


def _shape(parser: argparse.ArgumentParser, shape: FleetShape) -> None:
    parser.add_argument("--interval", type=_seconds, default=shape.interval, help="heartbeat, s")
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
        formatter_class=_HelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    modes.add_parser = partial(modes.add_parser, formatter_class=_HelpFormatter)  # type: ignore[method-assign]

    compat = modes.add_parser(
        "compat", help="like the original simulator: one random sensor per interval"
    )
    _common(compat)
    compat.add_argument("--interval", type=_seconds, default=5.0, help="seconds between reports")

    shape = FleetShape()
    fleet = modes.add_parser(
        "fleet", help="every sensor heartbeats; churn, silent sensors, upgrades"
    )
    _common(fleet)
    _shape(fleet, shape)
    fleet.add_argument("--concurrency", type=_count, default=64, help="calls in flight at most")
    fleet.add_argument("--report-every", type=float, default=30.0, help="census period, s")

    gateways = modes.add_parser(
        "gateways", help="the fleet through G gateways batching heartbeats; records acks"
    )
    _common(gateways)
    _shape(gateways, shape)
    gateways.add_argument("--gateways", type=_count, default=100, help="gateways (connections)")
    gateways.add_argument("--flush", type=_seconds, default=1.0, help="seconds between sends")
    gateways.add_argument("--batch-max", type=_count, default=1000, help="reports per call")
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
    load.add_argument("--batch-size", type=_count, default=500, help="statuses per batch call")
    load.add_argument("--concurrency", type=_count, default=8, help="calls in flight at most")
    load.add_argument("--report-every", type=float, default=2.0, help="seconds per line")

    demo = modes.add_parser(
        "demo-uploads", help="upload small release PDFs for the versions the emitter sends"
    )
    _find_dev(demo)
    demo.add_argument(
        "--url",
        help=f"daemon HTTP base URL (default: a running `just dev`'s, else {URL_DEFAULT})",
    )
    demo.add_argument(
        "--api-key",
        help="bearer key (default: env DRONESHIELD_API_KEY; prefer it: a flag shows in `ps`)",
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
        serials = from_file(args.serials_file)[: args.limit]
        if not serials:
            raise SystemExit(f"emitter: no serials in {args.serials_file}")
        return serials
    if not args.database_url:
        raise SystemExit(
            "emitter: no sensors to send as: start `just dev`, or give --database-url (or "
            "DATABASE_URL) or --serials-file"
        )
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
    if args.supervisor_fd is not None:
        supervisor = socket.socket(fileno=args.supervisor_fd)
        supervisor.setblocking(False)

        def supervisor_said() -> None:
            if not supervisor.recv(64):  # end-of-file: the supervisor is gone
                loop.remove_reader(supervisor)
                stop("supervisor gone")

        loop.add_reader(supervisor, supervisor_said)
    if args.duration is not None:
        loop.call_later(args.duration, stop, f"{args.duration:g} s elapsed")
    try:
        await _emit(args)
    except asyncio.CancelledError:
        if not reasons:
            raise
        log.info("stopped: %s", reasons[0])


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> argparse.Namespace:
    """Fill what no flag gave: secrets from the environment, addresses from the environment,
    else from a running `droneshield dev`, else the defaults of a local daemon."""
    dev = runfile.find(args.data_dir)
    if args.mode == "demo-uploads":
        args.api_key = args.api_key or env.get("DRONESHIELD_API_KEY")
        args.url = args.url or (dev.http_url if dev else URL_DEFAULT)
        return args
    args.token = args.token or env.get("DRONESHIELD_GRPC_TOKEN")
    args.database_url = args.database_url or env.get("DATABASE_URL") or (dev and dev.database_url)
    args.target = args.target or (dev.grpc_target if dev else TARGET_DEFAULT)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve(build_parser().parse_args(argv), os.environ)
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
