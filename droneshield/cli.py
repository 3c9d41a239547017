"""`droneshield serve | migrate | seed | dev`: one CLI, settings from flags and DRONESHIELD_* env.

Each command lists only the settings it uses, each with its default and variable, and the
parser refuses a value that breaks its rule (`--count -5`) with that rule, exit 2. A failure is
one line on stderr, exit 1 (`droneshield: HTTP port 127.0.0.1:8000 is in use`); `--debug` or
`--log-level debug` logs the traceback too.

Only argparse and the settings are imported up front: `droneshield --help` answers at once, and
each command imports what it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn

from . import config, logs
from .config import Settings

if TYPE_CHECKING:
    from .progress import Steps

log = logging.getLogger("droneshield")

DATABASE: Final = ("database_url", "data_dir", "log_level")
ALL: Final = tuple(f.name for f in dataclasses.fields(Settings))
# name: (what it does, the settings it takes)
COMMANDS: Final = {
    "serve": ("run the daemon (gRPC ingest, writer, HTTP/WebSocket app)", ALL),
    "migrate": ("apply database migrations that are not applied yet", DATABASE),
    "seed": (
        "provision sensors DS-00000001 … DS-<count> (idempotent)",
        (*DATABASE, "seed_count"),
    ),
    "dev": (
        "migrate, seed, then run the daemon and the emitter together (Ctrl-C stops all)",
        ALL,
    ),
    "sensors": ("provision sensors: `sensors import FILE.csv|-` (all rows or none)", DATABASE),
}
# Some settings read better under a command's own name.
ALIASES: Final = {("seed", "seed_count"): "count"}


class UsageError(Exception):
    """Settings that cannot work together; exit 2, like a flag the parser refused."""


class _Parser(argparse.ArgumentParser):
    """argparse, saying a usage error in one line (with where to look) rather than the whole
    usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _checked(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """The flag's type: the setting's conversion and its rule, told in argparse's words."""

    def parse(raw: str) -> Any:
        try:
            value = config.convert(f, raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a valid {f.type}") from None
        try:
            config.check(f.name, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{raw} {str(exc).removeprefix(f.name + ' ')}"
            ) from None
        return value

    return parse


def _add_setting_flags(parser: argparse.ArgumentParser, command: str, names: Sequence[str]) -> None:
    group = parser.add_argument_group("settings (flag > environment variable > default)")
    for f in dataclasses.fields(Settings):
        if f.name not in names:
            continue
        flag = "--" + ALIASES.get((command, f.name), f.name).replace("_", "-")
        default = "unset" if f.default is None else f.default
        text = f"{f.metadata.get('help', '')} (default {default}; env {config.env_name(f)})"
        if f.type in (bool, "bool"):
            group.add_argument(flag, dest=f.name, action="store_const", const=True, help=text)
        else:
            group.add_argument(
                flag, dest=f.name, type=_checked(f), metavar=f.name.upper(), help=text
            )


def _add_sensors_actions(parser: argparse.ArgumentParser) -> None:
    """`sensors import FILE` (sensor_import.py runs it; imported only then)."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imports = actions.add_parser(
        "import",
        help="provision sensors from a CSV file, all or none",
        description="Provision sensors from a CSV file with the header serial,site,label "
        "(site and label optional): all rows or none, idempotent (sensors already "
        "provisioned exactly so are counted as existing; retired ones come back).",
    )
    imports.add_argument("file", metavar="FILE", help="a CSV file, or - for standard input")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="droneshield", description="Fleet presence for drone-detection sensors.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, names) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--debug", action="store_true", help="on failure, log the whole traceback too"
        )
        _add_setting_flags(sub, name, names)
        if name == "dev":
            sub.add_argument(
                "--demo-uploads",
                action="store_true",
                help="upload small release PDFs for the emitter's versions once the daemon is "
                "ready",
            )
            sub.add_argument(
                "emitter_args",
                nargs=argparse.REMAINDER,
                metavar="-- EMITTER_ARGS",
                help="after --: extra flags for `python -m emitter fleet` (e.g. -- --churn 0.3)",
            )
        if name == "sensors":
            _add_sensors_actions(sub)
        if name == "serve":
            sub.add_argument(
                "--supervisor-fd",
                type=int,
                metavar="FD",
                help="run as a child of `serve --workers N` or `dev`: say ready, and stop when "
                "the supervisor is gone, on this inherited socket (set by the supervisor)",
            )
    return parser


def database_url(settings: Settings) -> str:
    """DATABASE_URL when given, else the embedded server under the data directory (started
    now, and stopped when this process exits)."""
    if settings.database_url:
        return settings.database_url
    from .db import embedded

    return embedded.start(settings.embedded_db_dir)


def refuse_open_network(settings: Settings) -> None:
    """Raises: UsageError when the daemon would serve beyond loopback without its keys and
    nobody said that is wanted (`allow_insecure`)."""
    if exposed := config.open_to_network(settings):
        raise UsageError(
            f"refusing to serve on {settings.host or 'all addresses'} where anyone could "
            f"{' and '.join(exposed)}: set the key(s), bind 127.0.0.1, or set "
            "DRONESHIELD_ALLOW_INSECURE=1 to accept it"
        )


def _first_leaf(exc: BaseException) -> BaseException:
    """The error that started it, out of nested exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def one_line(exc: BaseException) -> str:
    """What went wrong, for the person who ran the command: our errors say it themselves; an
    OS error by its text; anything else by its type and text."""
    from .errors import DroneshieldError

    root = _first_leaf(exc)
    if isinstance(root, DroneshieldError):
        return root.message
    if isinstance(root, OSError) and root.strerror:
        where = f": {root.filename}" if root.filename else ""
        return f"{root.strerror}{where}"
    return f"{type(root).__name__}: {root} (--debug shows where)"


def _server(
    settings: Settings, url: str, supervisor_fd: int | None
) -> Callable[[], Awaitable[object]]:
    """What `serve` runs: one worker of a group, a group's supervisor, or the daemon itself."""
    from functools import partial

    import trio

    from . import daemon, workers
    from .db import migrate

    if supervisor_fd is not None:
        return partial(workers.serve_as_worker, settings, url, supervisor_fd)
    if not config.is_loopback(settings.host) and settings.allow_insecure:
        if settings.api_key is None:
            log.warning("DRONESHIELD_API_KEY is unset: uploads are open to anyone")
        if settings.grpc_token is None:
            log.warning("DRONESHIELD_GRPC_TOKEN is unset: anyone reaching gRPC can report")
    trio.run(migrate.migrate_database, url)  # here, so a supervisor migrates once for all
    if settings.workers > 1:
        return partial(workers.supervise, settings, url, os.environ)
    return partial(daemon.run, settings, url)


def _migrate(url: str) -> None:
    import trio

    from . import progress
    from .db import migrate

    with progress.track("migrating", done="applied", unit="migration") as steps:
        trio.run(migrate.migrate_database, url, steps)


def _seed(url: str, count: int) -> None:
    import trio

    from . import progress
    from .db import migrate, seed
    from .db.pool import Connection, on_connection

    async def work(conn: Connection, steps: Steps) -> int:
        await migrate.require_migrated(conn)
        return await seed.seed(conn, count, steps)

    with progress.track("seeding", done="seeded", unit="sensor", total=count) as steps:
        created = trio.run(on_connection, url, lambda conn: work(conn, steps))
        steps.note = f"{created:,} new"


def run(args: argparse.Namespace, settings: Settings) -> None:
    """Run the parsed command.

    Raises:
        UsageError: settings that must not be run with.
        Exception: what the command failed with.
    """
    if args.command in ("serve", "dev") and getattr(args, "supervisor_fd", None) is None:
        refuse_open_network(settings)
        # A taken port is said once, before any database is started, migrated or joined.
        from .ports import ensure_free

        ensure_free("HTTP", settings.host, settings.http_port)
        ensure_free("gRPC", settings.host, settings.grpc_port)
    url = database_url(settings)
    if args.command == "migrate":
        _migrate(url)
    elif args.command == "seed":
        _seed(url, settings.seed_count)
    elif args.command == "sensors":
        from . import sensor_import

        sensor_import.run(url, args.file)
    elif args.command == "dev":
        from . import devrun

        devrun.main(settings, url, os.environ, args.emitter_args, args.demo_uploads)
    else:
        import trio

        from . import signals

        trio.run(signals.run_until_signalled, _server(settings, url, args.supervisor_fd))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {name: getattr(args, name) for name in ALL if hasattr(args, name)}
    try:
        settings = config.from_mapping(values, os.environ)
    except ValueError as exc:
        print(f"droneshield: {exc}", file=sys.stderr)
        return 2
    secrets = logs.configure(settings)
    debug = args.debug or settings.log_level.upper() == "DEBUG"
    try:
        run(args, settings)
    except UsageError as exc:
        print(f"droneshield: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"droneshield {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            log.critical("droneshield %s failed", args.command, exc_info=exc)
        # An asyncio future a failed start left behind (a database connect it cancelled) is
        # reported when it is collected: now, so that the failure stays the last line.
        gc.collect()
        print(logs.mask(f"droneshield: {one_line(exc)}", secrets), file=sys.stderr)
        return 1
    return 0
