"""`droneshield dev`: the whole system for a developer, as one supervised process tree.

The database (embedded unless DATABASE_URL is set, started by the CLI before this runs) lives as
long as this process. Migrations and seeding run here; the daemon (`droneshield serve`) and the
emitter (`python -m emitter fleet`) run as child processes in one Trio nursery. SIGINT or
SIGTERM stops them all; a child that exits on its own stops the others and makes this process
exit non-zero. Children run in their own session, so a Ctrl-C in the terminal reaches only this
supervisor, which stops them in order and within a bound: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Final

import httpx
import trio

from . import runfile
from .children import STOP_SLACK, child_env, run_process, serve_child
from .config import Settings
from .db import migrate, seed
from .db.pool import on_connection
from .errors import DroneshieldError
from .ports import ensure_free
from .runfile import DevRun
from .signals import run_until_signalled

log = logging.getLogger(__name__)

READY_TIMEOUT: Final = 60.0  # seconds for the daemon to answer /readyz
READY_POLL: Final = 0.2  # seconds between /readyz attempts
READY_REQUEST_TIMEOUT: Final = 2.0  # seconds per /readyz attempt


class NotReady(DroneshieldError):
    """The daemon did not answer /readyz in time."""

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


async def wait_ready(base_url: str) -> None:
    """Return once `base_url`/readyz answers 200 (the caller bounds the wait)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=READY_REQUEST_TIMEOUT) as client:
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await trio.sleep(READY_POLL)


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
    """Migrate, seed, then supervise the daemon and the emitter until SIGINT/SIGTERM.

    Raises:
        ChildExited: the daemon or the emitter stopped on its own (the other is stopped first).
        NotReady: the daemon did not become ready within READY_TIMEOUT.
        PortInUse: the HTTP or gRPC port is taken.
    """
    env = child_env(settings, database_url, base_env)
    shutdown = _Shutdown()

    # Once, clearly, before the daemon child would fail on it after migrating and seeding.
    ensure_free("HTTP", settings.host, settings.http_port)
    ensure_free("gRPC", settings.host, settings.grpc_port)

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
    base_url = f"http://{host}:{settings.http_port}"
    python = sys.executable
    async with trio.open_nursery() as daemons:
        daemon = [python, "-m", "droneshield", "serve"]
        await daemons.start(partial(serve_child, "daemon", daemon, env, stop_after=stop_after))
        with trio.move_on_after(READY_TIMEOUT) as waiting:
            await wait_ready(base_url)
        if waiting.cancelled_caught:
            raise NotReady(f"{base_url}/readyz did not answer 200 within {READY_TIMEOUT:.0f} s")
        print(
            f"droneshield dev: dashboard {base_url}/  gRPC {host}:{settings.grpc_port}  "
            "(Ctrl-C stops everything)",
            flush=True,
        )
        grpc_target = f"{host}:{settings.grpc_port}"
        run = DevRun(os.getpid(), env["DATABASE_URL"], base_url, grpc_target)
        with runfile.published(settings.data_dir, run):
            if demo_uploads:
                await _upload_demo_releases(python, base_url, env, stop_after)
            emitter = [python, "-m", "emitter", "fleet", "--target", grpc_target, *emitter_args]
            async with trio.open_nursery() as emitters:
                await emitters.start(
                    partial(serve_child, "emitter", emitter, env, stop_after=stop_after)
                )
                shutdown.running = True
                await shutdown.requested.wait()
                emitters.cancel_scope.cancel()
        daemons.cancel_scope.cancel()


async def _upload_demo_releases(
    python: str, base_url: str, env: Mapping[str, str], stop_after: float
) -> None:
    argv = [python, "-m", "emitter", "demo-uploads", "--url", base_url]
    done = await run_process("demo-uploads", argv, env, stop_after)()
    if done.returncode != 0:
        log.warning("demo uploads failed (exit %d); carrying on without them", done.returncode)
