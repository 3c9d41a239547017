"""`droneshield serve --workers N`: N full daemons on one host, sharing the gRPC and HTTP ports.

grpclib and betterproto2 are pure Python, so one process uses one core; more cores need more
processes. Each worker is a whole daemon (writer, presence, relay, servers), so two workers are
exactly two daemons on one database: changes reach each other's WebSockets over LISTEN/NOTIFY
and the conditional expiry lets only one of them mark a sensor offline. The ports are shared
with SO_REUSEPORT: the kernel spreads new connections over the workers. The supervisor binds
them first (without listening) and holds them, so a port taken by another program is one clear
error, and a port it picked for 0 stays the group's.

The supervisor (this process) starts the workers one after the other, each ready once it says
so on a socket pair it inherits; that socket is also its lifeline: when the supervisor is gone
(even SIGKILLed), the worker reads end-of-file and stops, rather than keep serving on the port
unsupervised. A worker that exits is restarted after an exponential delay; one that keeps
failing soon after starting makes the supervisor stop them all and fail, instead of spinning.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import trio

from . import daemon, metrics
from .children import STOP_SLACK, Ports, child_env, run_daemon, say_ready
from .config import Settings
from .errors import DroneshieldError
from .ports import claim, ensure_free, naming, shared_socket

log = logging.getLogger(__name__)

RESTART_DELAY_FIRST: Final = 0.5  # seconds before restarting a worker that failed once
RESTART_DELAY_MAX: Final = 30.0  # seconds
HEALTHY_AFTER: Final = 60.0  # seconds a worker must serve before its failures are forgotten
FAILURES_MAX: Final = 5  # failures in a row, each within HEALTHY_AFTER of serving: give up


class WorkersFailed(DroneshieldError):
    """A worker kept failing soon after each start; restarting it again would only spin."""

    code = "workers_failed"


class PortUnavailable(DroneshieldError):
    """The workers cannot share a port: another program holds it (or no SO_REUSEPORT here)."""

    code = "port_unavailable"


@dataclass
class Restarts:
    """When to restart a worker that exited. Pure: the caller says how long the worker served
    (0 for one that never became ready).

    Serving for less than `healthy_after` is a failure in a row; the delay doubles with each
    one, from `first` up to `cap`, and after `limit` of them there is no more restart. A worker
    that served longer than `healthy_after` starts a fresh count (and the shortest delay).
    """

    first: float = RESTART_DELAY_FIRST
    cap: float = RESTART_DELAY_MAX
    healthy_after: float = HEALTHY_AFTER
    limit: int = FAILURES_MAX
    failures: int = 0

    def after_exit(self, served_for: float) -> float | None:
        """The delay before the next start, or None: give up."""
        if served_for >= self.healthy_after:
            self.failures = 0
        self.failures += 1
        if self.failures >= self.limit:
            return None
        return min(self.cap, self.first * 2.0 ** (self.failures - 1))


async def _keep_worker(
    name: str,
    env: Mapping[str, str],
    stop_after: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep one worker running: `started()` once it first serves; restarted when it exits.

    Raises:
        WorkersFailed: it failed `FAILURES_MAX` times in a row soon after starting.
    """
    restarts = Restarts()
    announced = False
    served_at: float | None = None

    def ready(pid: int, _: Ports) -> None:
        nonlocal announced, served_at
        log.info("%s serving (pid %d)", name, pid)
        served_at = trio.current_time()
        if not announced:
            announced = True
            task_status.started()

    while True:
        served_at = None
        ended = await run_daemon(name, env, stop_after, ready)
        metrics.worker_exited(Path(env[metrics.MULTIPROC_ENV]), ended.pid)
        # Time spent serving, not since the spawn: a worker that never became ready (and was
        # stopped after READY_TIMEOUT) is a failure however long that took.
        served = 0.0 if served_at is None else trio.current_time() - served_at
        delay = restarts.after_exit(served)
        if delay is None:
            raise WorkersFailed(
                f"{name} {ended}; it failed {restarts.failures} times in a row, each within "
                f"{restarts.healthy_after:.0f} s of serving: giving up"
            )
        log.warning("%s %s; restarting it in %.1f s", name, ended, delay)
        await trio.sleep(delay)


def _hold_port(held: ExitStack, host: str, port: int, what: str) -> int:
    """Bind the group's port here first (0: pick one) and hold it while the workers run: a port
    another program or another group holds fails now, once and clearly, rather than as workers
    crashing one after the other or sharing it with the other group; and a port picked here
    stays the group's while a worker restarts.

    Raises:
        PortInUse: another program or another group listens there (or claims it).
        PortUnavailable: the port cannot be shared (no SO_REUSEPORT here, another user's).
    """
    ensure_free(what, host, port)  # a listener with SO_REUSEPORT would not stop shared_socket
    try:
        with naming(what, host, port):
            sock = held.enter_context(shared_socket(host, port))
    except OSError as exc:
        raise PortUnavailable(f"{what} port {host}:{port} cannot be shared: {exc}") from None
    bound = int(sock.getsockname()[1])
    held.enter_context(claim(what, host, bound))  # another group starting now, no worker yet
    return bound


async def supervise(
    settings: Settings,
    database_url: str,
    base_env: Mapping[str, str],
    *,
    task_status: trio.TaskStatus[tuple[int, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run `settings.workers` daemons (migrations applied beforehand) until cancelled.

    `task_status.started()` reports (gRPC port, HTTP port) once every worker serves.

    Cancellation: every worker gets SIGTERM at once, and SIGKILL if it is still running
    `shutdown_grace` + STOP_SLACK seconds later; this returns only once all have exited.

    Raises:
        WorkersFailed: a worker kept failing (the others are stopped first).
        PortInUse: a port is taken by another program.
        PortUnavailable: a port cannot be shared.
    """
    with ExitStack() as held:
        grpc_port = _hold_port(held, settings.host, settings.grpc_port, "gRPC")
        http_port = _hold_port(held, settings.host, settings.http_port, "HTTP")
        ports = settings.replace(grpc_port=grpc_port, http_port=http_port)
        env = child_env(ports, database_url, base_env)
        # The workers' metric files: every worker's /metrics sums them (see metrics.py).
        env[metrics.MULTIPROC_ENV] = str(held.enter_context(metrics.shared_directory()))
        stop_after = settings.shutdown_grace + STOP_SLACK
        async with trio.open_nursery() as nursery:
            for index in range(1, settings.workers + 1):
                await nursery.start(_keep_worker, f"worker {index}", env, stop_after)
            log.info(
                "droneshield ready: %d workers, gRPC :%d, HTTP :%d",
                settings.workers,
                grpc_port,
                http_port,
            )
            task_status.started((grpc_port, http_port))
            await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def serve_as_worker(settings: Settings, database_url: str, supervisor_fd: int) -> None:
    """One worker of a group: the daemon, on ports it shares with the others; says it is
    serving on `supervisor_fd`, and returns (the daemon stopped) when the supervisor is gone.

    Raises:
        What `daemon.run` raises.
    """
    metrics.WORKER.labels(str(os.getpid())).set(1)
    with trio.socket.from_stdlib_socket(socket.socket(fileno=supervisor_fd)) as link:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(daemon.run, settings, database_url)
            await say_ready(link, Ports(running.grpc_port, running.http_port))
            while await link.recv(1):
                pass  # the supervisor never writes; only its end closing matters
            log.warning("the supervisor is gone; stopping")
            nursery.cancel_scope.cancel()
