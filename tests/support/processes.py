"""Test helpers for child processes: start one in its own session, collect its output lines as
they come, wait for a line, stop it (SIGINT, then SIGKILL) within a bound; a `droneshield serve`
child and its memory; a private PostgreSQL server to stop and start; free ports, bounded
polling, and what /proc says of processes and ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import trio

ROOT: Final = Path(__file__).resolve().parents[2]
STOP_TIMEOUT: Final = 15.0  # seconds for a child to exit after SIGINT
EOF_TIMEOUT: Final = 5.0  # seconds for the output pipe to close after the child exited
POLL: Final = 0.05  # seconds between polls of the database
READY: Final = re.compile(r"droneshield ready: gRPC :(\d+), HTTP :(\d+)")
PG_BIN_DIRS: Final = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
PG_USER: Final = "postgres"  # postgres refuses to run as root


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
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> AsyncIterator[Spawned]:
    """Run `argv` (from the project root unless `cwd` says otherwise) in its own session; on
    leaving, stop it (bounded)."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
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


def status_kib(pid: int, field: str) -> int:
    """A memory figure of process `pid` from /proc/<pid>/status, in KiB (VmRSS: resident now;
    VmHWM: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@dataclass(frozen=True)
class Daemon:
    """A `droneshield serve` child that is ready, and where it listens."""

    spawned: Spawned
    grpc_port: int
    http_port: int

    @property
    def pid(self) -> int:
        return self.spawned.process.pid

    def rss_bytes(self) -> int:
        """Resident memory right now, from /proc (the kernel's count, not the allocator's)."""
        return status_kib(self.pid, "VmRSS") * 1024


@asynccontextmanager
async def serve(database_url: str, data_dir: Path, **settings: object) -> AsyncIterator[Daemon]:
    """`droneshield serve` on ephemeral ports, once it says it is ready; `settings` become
    DRONESHIELD_* variables (`offline_after=1` → DRONESHIELD_OFFLINE_AFTER=1). Stopped on exit
    (SIGINT, then SIGKILL) unless the test killed it already."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DRONESHIELD_DATA_DIR": str(data_dir),
        "DRONESHIELD_HTTP_PORT": "0",
        "DRONESHIELD_GRPC_PORT": "0",
        **{f"DRONESHIELD_{k.upper()}": str(v) for k, v in settings.items()},
    }
    async with spawn([sys.executable, "-m", "droneshield", "serve"], env=env) as spawned:
        line = await spawned.wait_for("droneshield ready")
        found = READY.search(line)
        assert found is not None, line
        yield Daemon(spawned, int(found.group(1)), int(found.group(2)))


class PrivatePostgres:
    """A PostgreSQL server of the test's own, on its own port, that the test may stop (as a
    crash would: immediate mode) and start again. The shared server is never touched."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self._bin_dir = bin_dir
        self._root = root
        self.port = port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{database}"

    async def _run(self, tool: str, *args: str, check: bool = True) -> None:
        argv = [str(self._bin_dir / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        await trio.run_process(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=check
        )

    async def init(self) -> None:
        await self._run(
            "initdb", "-D", str(self._root / "data"), "-A", "trust", "-U", "root", "--no-sync"
        )

    async def start(self) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
        data, log = str(self._root / "data"), str(self._root / "log")
        await self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    async def stop(self, *, check: bool = True) -> None:
        data = str(self._root / "data")
        await self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=check)


@asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A fresh server (Debian's PostgreSQL binaries, run as `postgres` when we are root) in a
    temporary directory, running; stopped and removed on exit.

    Skips the test when no PostgreSQL binaries are installed.
    """
    if not PG_BIN_DIRS:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    root = Path(tempfile.mkdtemp(prefix="droneshield-private-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, PG_USER)
        server = PrivatePostgres(PG_BIN_DIRS[0], root, free_port())
        await server.init()
        await server.start()
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await server.stop(check=False)  # the test may have left it stopped
    finally:
        shutil.rmtree(root, ignore_errors=True)
