"""`droneshield dev`: the whole system for a developer, as one supervised process tree.

The database (embedded unless DATABASE_URL is set, started by the CLI before this runs) lives as
long as this process. Migrations and seeding run here; the daemon (`droneshield serve`) and the
emitter (`python -m emitter fleet`) run as child processes in one Trio nursery. SIGINT, SIGTERM
or SIGHUP (its terminal closed) stops them all; a child that exits on its own stops the others
and makes this process exit non-zero. Children run in their own session, so a Ctrl-C in the
terminal reaches only this supervisor, which stops them in order and within a bound: SIGTERM,
then SIGKILL. The daemon is a lone worker on a lifeline (children.py): it says on which ports it
serves (so port 0 works), and stops by itself when this process dies without stopping it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import NoReturn

import trio

from . import runfile
from .children import (
    READY_TIMEOUT,
    STOP_SLACK,
    ChildExited,
    Ports,
    child_env,
    run_daemon,
    run_process,
    serve_child,
)
from .config import Settings
from .db import migrate, seed
from .db.pool import on_connection
from .errors import DroneshieldError
from .runfile import DevRun
from .signals import run_until_signalled

log = logging.getLogger(__name__)


class NotReady(DroneshieldError):
    """The daemon did not start serving in time."""

    code = "not_ready"


def main(
    settings: Settings,
    database_url: str,
    base_env: Mapping[str, str],
    emitter_args: Sequence[str] = (),
    demo_uploads: bool = False,
) -> None:
    """The CLI's entry: run `dev` (`emitter_args` may start with `--`), and say it stopped
    once a signal stopped it. Blocking.

    Raises:
        What `dev` raises.
    """
    extra = list(emitter_args)
    emitter_args = extra[1:] if extra[:1] == ["--"] else extra
    try:
        trio.run(
            partial(
                dev,
                settings,
                database_url,
                base_env,
                emitter_args=emitter_args,
                demo_uploads=demo_uploads,
            )
        )
    finally:
        # An embedded database is stopped by an atexit hook after this returns; a duplicate
        # Ctrl-C arriving late (forwarded by `uv run` or `just`) must not interrupt that.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("droneshield dev: stopped", flush=True)


def local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _prepare(settings: Settings, database_url: str) -> None:
    await migrate.migrate_database(database_url)
    created = await on_connection(database_url, partial(seed.seed, count=settings.seed_count))
    log.info("%d sensors seeded", created)


class _Shutdown:
    """How a signal stops `dev`: during start-up by cancelling everything at once; once all
    runs, in order (the emitter first, so the daemon still answers the reports in flight)."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.running = False
        self.requested = trio.Event()

    def request(self) -> None:
        if self.running:
            self.requested.set()
        else:
            self.scope.cancel()


async def dev(
    settings: Settings,
    database_url: str,
    base_env: Mapping[str, str],
    *,
    emitter_args: Sequence[str] = (),
    demo_uploads: bool = False,
) -> None:
    """Migrate, seed, then supervise the daemon and the emitter until SIGINT/SIGTERM/SIGHUP.

    Raises:
        ChildExited: the daemon or the emitter stopped on its own (the other is stopped first).
        NotReady: the daemon did not start serving within READY_TIMEOUT.
        PortInUse: the HTTP or gRPC port is taken.
    """
    if settings.workers > 1:
        log.warning("dev runs one daemon; --workers %d is for `serve`", settings.workers)
    # One daemon: `workers` > 1 would make the lone worker bind its ports to share them.
    env = child_env(settings.replace(workers=1), database_url, base_env)
    shutdown = _Shutdown()

    async def work() -> None:
        with shutdown.scope:
            await _prepare(settings, database_url)
            await _supervise(settings, env, emitter_args, shutdown, demo_uploads=demo_uploads)

    await run_until_signalled(work, shutdown.request)


async def _supervise(
    settings: Settings,
    env: Mapping[str, str],
    emitter_args: Sequence[str],
    shutdown: _Shutdown,
    *,
    demo_uploads: bool,
) -> None:
    stop_after = settings.shutdown_grace + STOP_SLACK
    host = _url_host(local_host(settings.host))
    python = sys.executable
    async with trio.open_nursery() as daemons:
        ports = await daemons.start(_serve_daemon, env, stop_after)
        base_url = f"http://{host}:{ports.http}"
        grpc_target = f"{host}:{ports.grpc}"
        print(
            f"droneshield dev: dashboard {base_url}/  gRPC {grpc_target}  "
            "(Ctrl-C stops everything)",
            flush=True,
        )
        run = DevRun(os.getpid(), env["DATABASE_URL"], base_url, grpc_target)
        with runfile.published(settings.data_dir, run):
            if demo_uploads:
                await _upload_demo_releases(python, base_url, env, stop_after)
            emitter = [python, "-m", "emitter", "fleet", "--target", grpc_target, *emitter_args]
            async with trio.open_nursery() as emitters:
                await emitters.start(
                    partial(
                        serve_child, "emitter", emitter, env, stop_after=stop_after, lifeline=True
                    )
                )
                shutdown.running = True
                await shutdown.requested.wait()
                emitters.cancel_scope.cancel()
        daemons.cancel_scope.cancel()


async def _serve_daemon(
    env: Mapping[str, str], stop_after: float, *, task_status: trio.TaskStatus[Ports]
) -> NoReturn:
    """The daemon child, for as long as the caller's nursery lives: `started()` with its ports.

    Raises:
        NotReady: it did not start serving within READY_TIMEOUT (it was stopped).
        ChildExited: it exited on its own.
    """
    ended = await run_daemon("daemon", env, stop_after, lambda _, ports: task_status.started(ports))
    if ended.timed_out:
        raise NotReady(f"the daemon did not start serving within {READY_TIMEOUT:.0f} s")
    raise ChildExited("daemon", ended.returncode)


async def _upload_demo_releases(
    python: str, base_url: str, env: Mapping[str, str], stop_after: float
) -> None:
    argv = [python, "-m", "emitter", "demo-uploads", "--url", base_url]
    done = await run_process("demo-uploads", argv, env, stop_after)()
    if done.returncode != 0:
        log.warning("demo uploads failed (exit %d); carrying on without them", done.returncode)
