"""Child processes under a Trio supervisor (`droneshield dev`, `droneshield serve --workers`).

A child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor, which
then stops its children in order and within a bound: SIGTERM, then SIGKILL. Children get every
setting of the supervisor as environment variables, so they run with exactly what it was given.

A daemon child (`droneshield serve --supervisor-fd FD`) also inherits one end of a socket pair:
it says there that it serves, and on which ports (so a port 0 it picked is known); and that
socket is its lifeline: when the supervisor is gone by any means (SIGKILL, a closed terminal),
the child reads end-of-file and stops, rather than keep the ports unsupervised. Not
PR_SET_PDEATHSIG: that fires when the forking *thread* exits, and Trio spawns from its threads.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final, NamedTuple, NoReturn

import trio

from . import config
from .config import Settings
from .errors import DroneshieldError

log = logging.getLogger(__name__)

STOP_SLACK: Final = 5.0  # seconds beyond the daemon's shutdown grace before SIGKILL
READY_TIMEOUT: Final = 60.0  # seconds for a daemon child to start serving
READY: Final = b"ready"  # what a daemon child writes to its supervisor socket, then its ports
SERVE: Final = (sys.executable, "-m", "droneshield", "serve")


class ChildExited(DroneshieldError):
    """A supervised child stopped although nobody asked it to."""

    code = "child_exited"

    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(f"{name} exited with code {returncode}")
        self.name = name
        self.returncode = returncode


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


def _stopper(name: str, stop_after: float) -> Callable[[trio.Process], Awaitable[None]]:
    async def stop(process: trio.Process) -> None:
        process.terminate()
        await trio.sleep(stop_after)
        log.warning("%s ignored SIGTERM for %.0f s; killing it", name, stop_after)
        process.kill()

    return stop


def run_process(
    name: str, argv: Sequence[str], env: Mapping[str, str], stop_after: float, **options: Any
) -> Callable[..., Awaitable[subprocess.CompletedProcess[bytes]]]:
    """`trio.run_process` for a child of ours: own session (the terminal's Ctrl-C reaches only
    the supervisor), no stdin, output shared with the supervisor, bounded stop. `options` go to
    `trio.run_process` as well (`pass_fds`, for one)."""
    return partial(
        trio.run_process,
        list(argv),
        env=dict(env),
        check=False,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        deliver_cancel=_stopper(name, stop_after),
        **options,
    )


async def serve_child(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stop_after: float,
    lifeline: bool = False,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run one child process for as long as the caller's nursery lives; with `lifeline`, it
    gets `--supervisor-fd FD` after `argv`, a socket whose end-of-file tells it this process
    is gone (however it ended).

    Cancellation: the child gets SIGTERM, and SIGKILL if it is still running `stop_after`
    seconds later; this returns only once it has exited.

    Raises:
        ChildExited: the child exited on its own (cleanly or not).
    """
    link = socket.socketpair() if lifeline else ()
    try:
        spawn = (
            _on_lifeline(name, argv, env, stop_after, link[1])
            if link
            else run_process(name, argv, env, stop_after)
        )
        async with trio.open_nursery() as nursery:
            process = await nursery.start(spawn)
            for theirs in link[1:]:
                theirs.close()  # only the child holds its end now: our end lives as we do
            log.info("%s started (pid %d)", name, process.pid)
            task_status.started(process)
    finally:
        for end in link:
            end.close()
    raise ChildExited(name, process.returncode)


def _on_lifeline(
    name: str, argv: Sequence[str], env: Mapping[str, str], stop_after: float, theirs: socket.socket
) -> Callable[..., Awaitable[subprocess.CompletedProcess[bytes]]]:
    """`run_process` of a child given `theirs` (one end of a socket pair) as its lifeline:
    `--supervisor-fd FD` after `argv`, the descriptor passed down."""
    fd = theirs.fileno()
    return run_process(name, [*argv, "--supervisor-fd", str(fd)], env, stop_after, pass_fds=(fd,))


class Ports(NamedTuple):
    """Where a daemon child listens."""

    grpc: int
    http: int


@dataclasses.dataclass(frozen=True)
class Ended:
    """How a daemon child ended."""

    pid: int
    returncode: int | None
    timed_out: bool  # it did not say it serves within READY_TIMEOUT, so it was stopped

    def __str__(self) -> str:
        if self.timed_out:
            return f"did not start serving within {READY_TIMEOUT:.0f} s"
        return f"exited with code {self.returncode}"


async def run_daemon(
    name: str, env: Mapping[str, str], stop_after: float, ready: Callable[[int, Ports], None]
) -> Ended:
    """Run one daemon child on a lifeline until it exits, calling `ready(pid, ports)` once it
    serves.

    Cancellation: the child gets SIGTERM, then SIGKILL after `stop_after` seconds; this returns
    only once it has exited.
    """
    ours, theirs = socket.socketpair()
    with trio.socket.from_stdlib_socket(ours) as link, theirs:
        spawn = _on_lifeline(name, SERVE, env, stop_after, theirs)
        async with trio.open_nursery() as nursery:
            process = await nursery.start(spawn)
            theirs.close()  # only the child holds its end now: its exit reads as end-of-file
            log.info("%s started (pid %d)", name, process.pid)
            with trio.move_on_after(READY_TIMEOUT) as waiting:
                ports = await _read_ports(link)
            if waiting.cancelled_caught:
                nursery.cancel_scope.cancel()
            elif ports is not None:
                ready(process.pid, ports)
            # `link` stays open until the child exits: closing it would stop the child.
    return Ended(process.pid, process.returncode, waiting.cancelled_caught)


async def _read_ports(link: trio.socket.SocketType) -> Ports | None:
    """The ports the child says it serves on, or None: it exited first."""
    said = b""
    while not said.endswith(b"\n"):
        if not (chunk := await link.recv(64)):
            return None
        said += chunk
    _, grpc, http = said.split()
    return Ports(int(grpc), int(http))


async def say_ready(link: trio.socket.SocketType, ports: Ports) -> None:
    """The daemon child's side: tell the supervisor it serves, and on which ports."""
    message = b"%s %d %d\n" % (READY, ports.grpc, ports.http)
    while message:
        message = message[await link.send(message) :]
