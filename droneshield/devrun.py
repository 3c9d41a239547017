"""`droneshield dev`: the whole system for a developer, as one supervised process tree.

The database (embedded unless DATABASE_URL is set, started by the CLI before this runs) lives as
long as this process. Migrations and seeding run here; the daemon (`droneshield serve`) and the
emitter (`python -m emitter fleet`) run as child processes in one Trio nursery. SIGINT or
SIGTERM stops them all; a child that exits on its own stops the others and makes this process
exit non-zero. Children run in their own session, so a Ctrl-C in the terminal reaches only this
supervisor, which stops them in order and within a bound: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Final, NoReturn

import httpx
import trio
import trio_asyncio

from . import config
from .config import Settings
from .db import migrate, seed
from .db.pool import connect
from .errors import DroneshieldError

log = logging.getLogger(__name__)

STOP_SLACK: Final = 5.0  # seconds beyond the daemon's shutdown grace before SIGKILL
READY_TIMEOUT: Final = 60.0  # seconds for the daemon to answer /readyz
READY_POLL: Final = 0.2  # seconds between /readyz attempts
READY_REQUEST_TIMEOUT: Final = 2.0  # seconds per /readyz attempt


class ChildExited(DroneshieldError):
    """A supervised child stopped although nobody asked it to."""

    code = "child_exited"

    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(f"{name} exited with code {returncode}")
        self.name = name
        self.returncode = returncode


class NotReady(DroneshieldError):
    """The daemon did not answer /readyz in time."""

    code = "not_ready"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`droneshield dev`'s own flags, beside the settings."""
    parser.add_argument(
        "--demo-uploads",
        action="store_true",
        help="upload small release PDFs for the emitter's versions once the daemon is ready",
    )
    parser.add_argument(
        "emitter_args",
        nargs=argparse.REMAINDER,
        metavar="-- EMITTER_ARGS",
        help="after --: extra flags for `python -m emitter fleet` (e.g. -- --churn 0.3)",
    )


def main(
    settings: Settings, database_url: str, base_env: Mapping[str, str], args: argparse.Namespace
) -> None:
    """The CLI's entry: run `dev` with the flags `add_arguments` defined. Blocking.

    Raises:
        What `dev` raises.
    """
    extra = list(args.emitter_args)
    emitter_args = extra[1:] if extra[:1] == ["--"] else extra
    try:
        trio.run(
            partial(
                dev,
                settings,
                database_url,
                base_env,
                emitter_args=emitter_args,
                demo_uploads=args.demo_uploads,
            )
        )
    finally:
        # An embedded database is stopped by an atexit hook after this returns; a duplicate
        # Ctrl-C arriving late (forwarded by `uv run` or `just`) must not interrupt that.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def child_env(settings: Settings, database_url: str, base: Mapping[str, str]) -> dict[str, str]:
    """`base` (the supervisor's environment) plus every setting as its env var, so the children
    run with exactly the settings the supervisor was given (flags included)."""
    env = dict(base)
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[config.env_name(f)] = str(value)
    env["DATABASE_URL"] = database_url
    return env


def local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _stopper(name: str, stop_after: float) -> Callable[[trio.Process], Awaitable[None]]:
    async def stop(process: trio.Process) -> None:
        process.terminate()
        await trio.sleep(stop_after)
        log.warning("%s ignored SIGTERM for %.0f s; killing it", name, stop_after)
        process.kill()

    return stop


def _run_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], stop_after: float
) -> Callable[..., Awaitable[subprocess.CompletedProcess[bytes]]]:
    """`trio.run_process` for a child of ours: own session (the terminal's Ctrl-C reaches only
    the supervisor), no stdin, output shared with the supervisor, bounded stop."""
    return partial(
        trio.run_process,
        list(argv),
        env=dict(env),
        check=False,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        deliver_cancel=_stopper(name, stop_after),
    )


async def serve_child(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stop_after: float,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run one child process for as long as the caller's nursery lives.

    Cancellation: the child gets SIGTERM, and SIGKILL if it is still running `stop_after`
    seconds later; this returns only once it has exited.

    Raises:
        ChildExited: the child exited on its own (cleanly or not).
    """
    async with trio.open_nursery() as nursery:
        process = await nursery.start(_run_process(name, argv, env, stop_after))
        log.info("%s started (pid %d)", name, process.pid)
        task_status.started(process)
    raise ChildExited(name, process.returncode)


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
    async with trio_asyncio.open_loop(), connect(database_url) as conn:
        applied = await migrate.migrate(conn)
        created = await seed.seed(conn, settings.seed_count)
    log.info("migrations applied: %s; %d sensors seeded", applied or "none needed", created)


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

    @property
    def underway(self) -> bool:
        return self.requested.is_set() or self.scope.cancel_called


async def _watch_signals(signals: AsyncIterator[int], shutdown: _Shutdown) -> None:
    # Keeps receiving for as long as the children take to stop: under `uv run` or `timeout` a
    # Ctrl-C can arrive twice (from the terminal and forwarded), and a signal left unreceived
    # would be re-raised as KeyboardInterrupt when the receiver closes.
    async for signum in signals:
        name = signal.Signals(signum).name
        if shutdown.underway:
            log.info("%s received; already stopping", name)
        else:
            log.info("%s received; stopping everything", name)
            shutdown.request()


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
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /readyz poll otherwise
    env = child_env(settings, database_url, base_env)
    shutdown = _Shutdown()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, shutdown)
            with shutdown.scope:
                await _prepare(settings, database_url)
                await _supervise(settings, env, emitter_args, shutdown, demo_uploads=demo_uploads)
            nursery.cancel_scope.cancel()


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
        if demo_uploads:
            await _upload_demo_releases(python, base_url, env, stop_after)
        emitter = [
            *(python, "-m", "emitter", "fleet", "--target", f"{host}:{settings.grpc_port}"),
            *emitter_args,
        ]
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
    done = await _run_process("demo-uploads", argv, env, stop_after)()
    if done.returncode != 0:
        log.warning("demo uploads failed (exit %d); carrying on without them", done.returncode)
