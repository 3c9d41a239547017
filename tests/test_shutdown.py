"""Shutdown: cancelling the daemon answers every report (committed or error), never hangs; the
CLI exits 0 on SIGTERM and non-zero, with a clear message, when a component fails."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from droneshield import daemon
from droneshield.db import seed
from droneshield.ingest.proto.status import DeviceStatus

from .support.grpc_clients import aio, grpclib_stub

READY = re.compile(rb"droneshield ready: gRPC :(\d+), HTTP :(\d+)")


async def test_cancel_with_reports_in_flight_commits_every_acknowledged_one(
    aio_loop, database_url, settings, db
):
    await seed.seed(db, 500)
    serials = [seed.serial_for(n) for n in range(1, 501)]
    outcomes: dict[str, object] = {}
    committed: list[object] = []
    some = trio.Event()  # set by the writer's first committed batch

    async def fire(port: int) -> None:
        # With a deadline, as real sensors call: grpclib's client leaves calls that wait for a
        # free HTTP/2 stream hanging when the server closes the connection.
        async def one(stub, serial):  # type: ignore[no-untyped-def]
            try:
                outcomes[serial] = await stub.send_status(DeviceStatus(serial=serial), timeout=5)
            # grpclib's client fails in several ways when its connection is closed under it
            # (GRPCError, StreamTerminatedError, OSError, even AttributeError): all are errors.
            except Exception as exc:
                outcomes[serial] = exc

        async with grpclib_stub(port) as stub:
            await asyncio.gather(*(one(stub, s) for s in serials))

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as daemon_scope:
                running = await daemon_scope.start(daemon.run, settings, database_url)
                running.writer.add_sink(lambda rows: committed.extend(rows) or some.set())
                clients.start_soon(aio, fire, running.grpc_port)
                await some.wait()
                daemon_scope.cancel_scope.cancel()

    assert len(outcomes) == 500  # every call was answered, one way or another
    acked = {s for s, o in outcomes.items() if not isinstance(o, BaseException)}
    online = {r["serial"] for r in await db.fetch("SELECT serial FROM sensor WHERE online")}
    assert acked <= online
    assert acked, "some reports should have been acknowledged before the cancel"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(database_url: str, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "DRONESHIELD_DATA_DIR": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "droneshield", "serve", *extra],
        env=env,
        stderr=subprocess.PIPE,
    )


async def _wait_ready(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stderr is not None
    seen = b""
    stream = trio.lowlevel.FdStream(os.dup(proc.stderr.fileno()))
    async with stream:
        while not READY.search(seen):
            chunk = await stream.receive_some()
            assert chunk, f"daemon exited before it was ready:\n{seen.decode()}"
            seen += chunk
    return seen


async def _stop_with(database_url: str, tmp_path: Path, *signals: signal.Signals) -> bytes:
    """Start `droneshield serve`, send `signals` once it is ready; its stderr after exit 0."""
    proc = _serve(database_url, tmp_path, "--grpc-port", "0", "--http-port", "0")
    try:
        with trio.fail_after(20):
            await _wait_ready(proc)
        for signum in signals:
            proc.send_signal(signum)
        with trio.fail_after(5):
            _, err = await trio.to_thread.run_sync(proc.communicate, abandon_on_cancel=True)
        assert proc.returncode == 0
        return err
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


async def test_serve_exits_zero_on_sigterm_within_five_seconds(database_url, tmp_path):
    err = await _stop_with(database_url, tmp_path, signal.SIGTERM)
    assert b"SIGTERM received; shutting down" in err


async def test_a_second_signal_during_shutdown_is_absorbed(database_url, tmp_path):
    err = await _stop_with(database_url, tmp_path, signal.SIGINT, signal.SIGINT)
    assert b"KeyboardInterrupt" not in err


async def test_serve_fails_with_a_clear_message_when_a_port_is_taken(database_url, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(database_url, tmp_path, "--grpc-port", "0", "--http-port", str(port))
        try:
            _, err = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert (
        err.strip().splitlines()[-1]
        == f"droneshield: HTTP port 127.0.0.1:{port} is in use".encode()
    )
    assert b"Traceback" not in err
