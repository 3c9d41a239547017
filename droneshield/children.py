"""Child processes under a Trio supervisor (`droneshield dev`, `droneshield serve --workers`).

A child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor, which
then stops its children in order and within a bound: SIGTERM, then SIGKILL. Children get every
setting of the supervisor as environment variables, so they run with exactly what it was given.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final, NoReturn

import trio

from . import config
from .config import Settings
from .errors import DroneshieldError

log = logging.getLogger(__name__)

STOP_SLACK: Final = 5.0  # seconds beyond the daemon's shutdown grace before SIGKILL


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
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run one child process for as long as the caller's nursery lives.

    Cancellation: the child gets SIGTERM, and SIGKILL if it is still running `stop_after`
    seconds later; this returns only once it has exited.

    Raises:
        ChildExited: the child exited on its own (cleanly or not).
    """
    async with trio.open_nursery() as nursery:
        process = await nursery.start(run_process(name, argv, env, stop_after))
        log.info("%s started (pid %d)", name, process.pid)
        task_status.started(process)
    raise ChildExited(name, process.returncode)
