"""`droneshield serve | migrate | seed`: one CLI, settings from flags and DRONESHIELD_* env vars."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from . import config, daemon, devrun, logs, signals, workers
from .config import Settings
from .db import embedded, migrate, seed
from .db.pool import on_connection

log = logging.getLogger("droneshield")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not None else "unset"
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (env {config.env_name(f)}; default {default})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="droneshield", description="Fleet presence for drone-detection sensors."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("serve", "run the daemon (gRPC ingest, writer, HTTP/WebSocket app)"),
        ("migrate", "apply database migrations that are not applied yet"),
        ("seed", "provision sensors DS-00000001 … DS-<count> (idempotent)"),
        ("dev", "migrate, seed, then run the daemon and the emitter together (Ctrl-C stops all)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        _add_setting_flags(sub)
        if name == "seed":
            sub.add_argument("--count", type=int, help="sensors to ensure (default: seed_count)")
        if name == "dev":
            devrun.add_arguments(sub)
        if name == "serve":
            sub.add_argument(
                "--supervisor-fd",
                type=int,
                metavar="FD",
                help="run as one worker of `serve --workers N`: say ready, and stop when the "
                "supervisor is gone, on this inherited socket (set by the supervisor)",
            )
    return parser


def database_url(settings: Settings) -> str:
    """DATABASE_URL when given, else the embedded server under the data directory (started
    now, and stopped when this process exits)."""
    if settings.database_url:
        return settings.database_url
    return embedded.start(settings.embedded_db_dir)


def _first_leaf(exc: BaseException) -> BaseException:
    """The error that started it, out of nested exception groups (for a one-line message)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _server(
    settings: Settings, url: str, args: argparse.Namespace
) -> Callable[[], Awaitable[object]]:
    """What `serve` runs: one worker of a group, a group's supervisor, or the daemon itself."""
    if args.supervisor_fd is not None:
        return partial(workers.serve_as_worker, settings, url, args.supervisor_fd)
    if settings.api_key is None:
        log.warning("DRONESHIELD_API_KEY is unset: uploads are open to anyone")
    if settings.grpc_token is None:
        log.warning("DRONESHIELD_GRPC_TOKEN is unset: anyone reaching gRPC can report")
    trio.run(migrate.migrate_database, url)  # here, so a supervisor migrates once for all
    if settings.workers > 1:
        return partial(workers.supervise, settings, url, os.environ)
    return partial(daemon.run, settings, url)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = config.from_mapping(values, os.environ)
    except ValueError as exc:
        print(f"droneshield: {exc}", file=sys.stderr)
        return 2
    secrets = logs.configure(settings)
    url = database_url(settings)
    try:
        if args.command == "migrate":
            trio.run(migrate.migrate_database, url)
        elif args.command == "seed":
            count = args.count if args.count is not None else settings.seed_count
            created = trio.run(on_connection, url, partial(seed.seed, count=count))
            log.info("seeded: %s new sensors, %d in all requested", created, count)
        elif args.command == "dev":
            devrun.main(settings, url, os.environ, args)
        else:
            trio.run(signals.run_until_signalled, _server(settings, url, args))
    except Exception as exc:
        root = _first_leaf(exc)
        log.critical("droneshield %s failed: %r", args.command, root, exc_info=exc)
        print(logs.mask(f"droneshield {args.command} failed: {root!r}", secrets), file=sys.stderr)
        return 1
    return 0
