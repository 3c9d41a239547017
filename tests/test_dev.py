"""`droneshield dev` as a developer runs it: a subprocess supervising the daemon and the
emitter, stopped with SIGINT, leaving nothing behind."""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio_asyncio

from droneshield import config, runfile
from droneshield.children import child_env, serve_child
from droneshield.config import Settings
from droneshield.db.pool import connect
from droneshield.devrun import local_host
from emitter.versions import RELEASED

from .support.processes import child_pids, eventually, free_port, listening, running, spawn

DEV = (sys.executable, "-m", "droneshield", "dev")
FAST_FLEET = ("--", "--interval", "0.3", "--report-every", "0.5")


def _env(data_dir: Path, database_url: str | None) -> tuple[dict[str, str], int]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DRONESHIELD_") and k != "DATABASE_URL"
    }
    http_port = free_port()
    env.update(
        DRONESHIELD_DATA_DIR=str(data_dir),
        DRONESHIELD_HTTP_PORT=str(http_port),
        DRONESHIELD_GRPC_PORT=str(free_port()),
        DRONESHIELD_SHUTDOWN_GRACE="2",
    )
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env, http_port


async def _sensors_come_online(http_port: int) -> None:
    """/readyz answers, then the API shows the seeded fleet and most of it going online."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        everyone = await client.get("/sensors", params={"limit": 1})
        assert everyone.json()["total"] == 100  # seed_count

        async def most_online() -> bool:
            online = await client.get("/sensors", params={"status": "online", "limit": 1})
            return online.json()["total"] >= 50

        await eventually(most_online)


async def _releases_uploaded(http_port: int) -> None:
    """`--demo-uploads` stored the released versions before the emitter started."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        software = (await client.get("/software")).json()["items"]
    assert sorted(item["version"] for item in software) == [f"v{v}" for v in RELEASED]


async def test_dev_runs_daemon_and_emitter_and_sigint_leaves_nothing_running(
    database_url, tmp_path
):
    env, http_port = _env(tmp_path, database_url)
    with trio.fail_after(90):
        async with spawn([*DEV, "--demo-uploads", *FAST_FLEET], env=env) as dev:
            await dev.wait_for(f"dashboard http://127.0.0.1:{http_port}/")
            await _sensors_come_online(http_port)
            await _releases_uploaded(http_port)
            children = child_pids(dev.process.pid)
            assert len(children) == 2  # the daemon and the emitter
            assert await dev.stop() == 0
    assert [pid for pid in children if running(pid)] == []
    # The emitter stops first, so the daemon still answers the reports it has in flight.
    emitter_stopped = _line_index(dev.lines, "emitter: stopped: SIGTERM")
    assert emitter_stopped < _line_index(dev.lines, "droneshield.signals: SIGTERM received")
    assert not listening(http_port)
    assert not listening(int(env["DRONESHIELD_GRPC_PORT"]))
    # Quietly: no line per call the stopping emitter gave up on; one last line.
    assert not [line for line in dev.lines if "Request was cancelled" in line]
    assert dev.lines[-1] == "droneshield dev: stopped"
    assert not (tmp_path / runfile.NAME).exists()


async def test_emit_and_demo_uploads_find_a_running_dev_by_themselves(database_url, tmp_path):
    env, http_port = _env(tmp_path, database_url)
    # As in a second terminal: no DATABASE_URL, no --target, no --url; only where dev keeps data.
    alone = {k: v for k, v in env.items() if k not in ("DATABASE_URL",) and "PORT" not in k}
    with trio.fail_after(90):
        async with spawn([*DEV, *FAST_FLEET], env=env) as dev:
            await dev.wait_for("emitter started")
            published = runfile.find(tmp_path)
            assert published is not None
            assert published.http_url == f"http://127.0.0.1:{http_port}"
            assert (tmp_path / runfile.NAME).stat().st_mode & 0o077 == 0
            emit = await trio.run_process(
                [sys.executable, "-m", "emitter", "compat", "--interval", "0.2", "--duration", "8"],
                env=alone,
                capture_stdout=True,
                capture_stderr=True,
            )
            uploads = await trio.run_process(
                [sys.executable, "-m", "emitter", "demo-uploads"],
                env=alone,
                capture_stdout=True,
                capture_stderr=True,
                check=False,  # its stderr says why, below
            )
            assert await dev.stop() == 0
    answers = [line for line in emit.stderr.decode().splitlines() if " → " in line]
    assert answers, emit.stderr.decode()  # dev's daemon answered: it found the address
    assert all("UNAVAILABLE" not in line for line in answers)
    assert uploads.returncode == 0, uploads.stderr.decode()
    await _assert_releases_stored(database_url)


async def _assert_releases_stored(database_url: str) -> None:
    """The demo releases were stored in dev's database (the daemon is gone; ask PostgreSQL)."""
    async with trio_asyncio.open_loop(), connect(database_url) as conn:
        versions = await conn.fetch("SELECT version FROM software ORDER BY version")
    assert [r["version"] for r in versions] == sorted(RELEASED)


def _line_index(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def _cmdline(pid: int) -> str:
    """`pid`'s command line; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def _child(parent: int, command: str) -> int:
    """The one child of `parent` running `command`, once there is one: a CI run found no
    emitter among dev's children in the instant after dev said it had started it."""
    found: list[int] = []

    async def one() -> bool:
        found[:] = [pid for pid in child_pids(parent) if command in _cmdline(pid)]
        return len(found) == 1

    await eventually(one)
    return found[0]


async def test_dev_stops_everything_and_fails_when_a_child_dies(database_url, tmp_path):
    env, _ = _env(tmp_path, database_url)
    with trio.fail_after(90):
        async with spawn([*DEV, *FAST_FLEET], env=env) as dev:
            await dev.wait_for("emitter started")
            emitter = await _child(dev.process.pid, "-m emitter")
            children = child_pids(dev.process.pid)
            os.kill(emitter, signal.SIGKILL)
            assert await dev.exited() == 1
            await dev.wait_for("emitter exited with code -9")
    assert [pid for pid in children if running(pid)] == []


async def test_a_killed_dev_leaves_no_daemon_serving_nor_emitter_sending(database_url, tmp_path):
    env, http_port = _env(tmp_path, database_url)
    grace = float(env["DRONESHIELD_SHUTDOWN_GRACE"])
    with trio.fail_after(90):
        async with spawn([*DEV, *FAST_FLEET], env=env) as dev:
            await dev.wait_for("emitter started")
            daemon = await _child(dev.process.pid, "droneshield serve")
            emitter = await _child(dev.process.pid, "-m emitter")

            async def both_stopped() -> bool:
                return not running(daemon) and not running(emitter)

            try:
                dev.process.kill()  # as `kill -9` would: nothing of dev's runs to stop them
                with trio.fail_after(grace + 5):
                    await dev.wait_for("the supervisor is gone; stopping")
                    await eventually(both_stopped)  # the emitter has a lifeline too
            finally:
                for pid in (daemon, emitter):
                    if running(pid):
                        os.kill(pid, signal.SIGKILL)  # for the next test, when this one failed
    assert not listening(http_port)
    assert not listening(int(env["DRONESHIELD_GRPC_PORT"]))


async def test_dev_on_port_0_reports_the_ports_it_got_and_sighup_stops_it(database_url, tmp_path):
    env, _ = _env(tmp_path, database_url)
    env.update(DRONESHIELD_HTTP_PORT="0", DRONESHIELD_GRPC_PORT="0")
    with trio.fail_after(90):
        async with spawn([*DEV, *FAST_FLEET], env=env) as dev:
            line = await dev.wait_for("dashboard http://")
            found = re.search(
                r"dashboard http://127\.0\.0\.1:(\d+)/  gRPC 127\.0\.0\.1:(\d+)", line
            )
            assert found is not None, line
            http_port, grpc_port = int(found[1]), int(found[2])
            assert 0 not in (http_port, grpc_port)
            await _sensors_come_online(http_port)  # the emitter reached the gRPC port it got
            children = child_pids(dev.process.pid)
            dev.process.send_signal(signal.SIGHUP)  # its terminal closed
            assert await dev.exited() == 0
    assert [pid for pid in children if running(pid)] == []
    assert not listening(http_port)
    assert not listening(grpc_port)
    assert dev.lines[-1] == "droneshield dev: stopped"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory that the embedded server's own system user can enter."""
    with tempfile.TemporaryDirectory(prefix="droneshield-dev-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


async def test_dev_without_database_url_runs_and_stops_an_embedded_postgresql(shared_tmp):
    env, http_port = _env(shared_tmp, None)
    postmaster = shared_tmp / "pg" / "postmaster.pid"
    with trio.fail_after(120):
        async with spawn([*DEV, *FAST_FLEET], env=env) as dev:
            await dev.wait_for("dashboard http://")
            await _sensors_come_online(http_port)
            postgres = int(postmaster.read_text().split()[0])
            assert running(postgres)
            assert await dev.stop() == 0
    assert not postmaster.exists()
    assert not running(postgres)


def test_children_get_every_setting_of_the_supervisor(tmp_path):
    settings = Settings(data_dir=tmp_path, http_port=9000, offline_after=12.5, api_key="k")
    env = child_env(settings, "postgresql://db/x", {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert config.from_mapping({}, env) == settings.replace(database_url="postgresql://db/x")


def test_servers_bound_to_every_address_are_reached_on_loopback():
    assert local_host("0.0.0.0") == "127.0.0.1"
    assert local_host("::") == "::1"
    assert local_host("10.1.2.3") == "10.1.2.3"


def _ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(status.split("SigIgn:", 1)[1].split()[0], 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


async def test_a_child_that_ignores_sigterm_is_killed_after_the_bound():
    argv = ["sh", "-c", "trap '' TERM; exec sleep 60"]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(serve_child, "stubborn", argv, dict(os.environ), stop_after=0.5)
            )

            async def ignoring() -> bool:
                return _ignores_sigterm(process.pid)

            await eventually(ignoring)
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert process.returncode == -signal.SIGKILL
    assert trio.current_time() - cancelled_at >= 0.5
