"""Test helpers for child processes: start one in its own session, collect its output lines as
they come, wait for a line, stop it (SIGINT, then SIGKILL) within a bound; plus free ports and
bounded polling, and what /proc says of processes and ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio

ROOT: Final = Path(__file__).resolve().parents[1]
STOP_TIMEOUT: Final = 15.0  # seconds for a child to exit after SIGINT
EOF_TIMEOUT: Final = 5.0  # seconds for the output pipe to close after the child exited
POLL: Final = 0.05  # seconds between polls of the database


class Spawned:
    """A running child and everything it printed so far (stdout and stderr, merged)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()
        self._eof = trio.Event()

    async def collect(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete)
            self._notify()
        if pending:
            self.lines.append(pending.decode(errors="replace"))
        self._eof.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def output(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    async def wait_for(self, text: str, *, start: int = 0) -> str:
        """The first line from index `start` on that contains `text` (the caller bounds it).

        Raises:
            AssertionError: the child's output ended without such a line.
        """
        seen = start
        while True:
            for line in self.lines[seen:]:
                if text in line:
                    return line
            seen = max(seen, len(self.lines))
            if self._eof.is_set():
                raise AssertionError(f"no line with {text!r}; output:\n{self.output()}")
            await self._changed.wait()

    async def wait_for_all(self, text: str, count: int, *, start: int = 0) -> list[str]:
        """The first `count` lines from index `start` on that contain `text`."""
        found: list[str] = []
        index = start
        while len(found) < count:
            line = await self.wait_for(text, start=index)
            index = self.lines.index(line, index) + 1
            found.append(line)
        return found

    async def exited(self) -> int:
        """The exit code, once the child has exited and its output is read."""
        code = await self.process.wait()
        with trio.move_on_after(EOF_TIMEOUT):
            await self._eof.wait()
        return code

    async def stop(self) -> int:
        """SIGINT (as Ctrl-C would), then SIGKILL if it takes longer than STOP_TIMEOUT."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            with trio.move_on_after(STOP_TIMEOUT):
                return await self.exited()
            self.process.kill()
        return await self.exited()


@asynccontextmanager
async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None
) -> AsyncIterator[Spawned]:
    """Run `argv` from the project root in its own session; on leaving, stop it (bounded)."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    spawned = Spawned(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spawned.collect)
        try:
            yield spawned
        finally:
            with trio.CancelScope(shield=True):
                await spawned.stop()
            nursery.cancel_scope.cancel()  # a grandchild may still hold the pipe open
    assert process.stdout is not None
    await process.stdout.aclose()


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, …


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == str(pid):
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def listening(port: int) -> bool:
    """Something holds 127.0.0.1:`port` (binding it fails)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A TCP port nothing listens on right now (for children that need a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds (the caller bounds the wait with `trio.fail_after`).
    For state only a database query can see; anything that can signal uses an Event."""
    while not await check():  # noqa: ASYNC110
        await trio.sleep(POLL)
