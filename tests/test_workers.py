"""`droneshield serve --workers N` as it runs in production: a supervisor process and N daemon
processes sharing the gRPC and HTTP ports, reached over real sockets, killed for real."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from droneshield import metrics
from droneshield.db import seed
from droneshield.dispatcher import ENDPOINTS_MAX
from droneshield.workers import Restarts

from .support.grpc_clients import send
from .support.live_client import open_live
from .support.processes import Spawned, eventually, free_port, listening, running, spawn
from .support.receivers import Receiver
from .support.scrapes import Samples, samples, scrape, total, value

SERVE = (sys.executable, "-m", "droneshield", "serve")
READY = re.compile(r"droneshield ready: (\d+) workers, gRPC :(\d+), HTTP :(\d+)")
SERVING = re.compile(r"(worker \d+) serving \(pid (\d+)\)")
GAVE_UP = re.compile(r"(worker \d+) exited with code 1; it failed (\d+) times in a row.*giving up")
START_TIMEOUT = 120  # seconds: every worker imports and starts a whole daemon, one by one


def _env(data_dir: Path, database_url: str, **settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DRONESHIELD_") and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=database_url,
        DRONESHIELD_DATA_DIR=str(data_dir),
        DRONESHIELD_HTTP_PORT="0",
        DRONESHIELD_GRPC_PORT="0",
        DRONESHIELD_SHUTDOWN_GRACE="2",
        DRONESHIELD_WORKERS="2",
    )
    env.update({f"DRONESHIELD_{name.upper()}": value for name, value in settings.items()})
    return env


@dataclass
class Group:
    """A running `serve --workers 2` and what its supervisor said once every worker served."""

    serve: Spawned
    grpc_port: int
    http_port: int
    workers: dict[str, int]  # pid by worker name


@asynccontextmanager
async def _serving(data_dir: Path, database_url: str, **settings: str) -> AsyncIterator[Group]:
    async with spawn(SERVE, env=_env(data_dir, database_url, **settings)) as serve:
        ready = READY.search(await serve.wait_for(" workers, gRPC :"))
        assert ready is not None
        workers = dict(m.groups() for line in serve.lines if (m := SERVING.search(line)))
        assert len(workers) == int(ready[1])
        pids = {name: int(pid) for name, pid in workers.items()}
        yield Group(serve, int(ready[2]), int(ready[3]), pids)


ACCESS_PID = re.compile(r'"pid":(\d+)')


async def _scrape_each_worker(group: Group) -> dict[int, Samples]:
    """/metrics as each worker answers it: every new connection lands on a worker the kernel
    picks, so scrape over new ones until each has answered; which one did, its access log line
    (found by the request id) says."""
    found: dict[int, Samples] = {}
    while len(found) < len(group.workers):
        request_id = f"scrape-{len(group.serve.lines)}-{len(found)}"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{group.http_port}") as client:
            got = await scrape(client, **{"X-Request-ID": request_id})
        line = await group.serve.wait_for(request_id)
        answered = ACCESS_PID.search(line)
        assert answered is not None, line
        found[int(answered[1])] = got
    return found


async def scrape_any(group: Group) -> Samples:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{group.http_port}") as client:
        return await scrape(client)


async def _provision(db: object, count: int) -> list[str]:
    await seed.seed(db, count)
    return [seed.serial_for(n) for n in range(1, count + 1)]


async def _report_each(grpc_port: int, serials: list[str]) -> None:
    """One report per sensor, each on a new connection (so the kernel picks a worker each)."""
    for serial in serials:
        ack = await send(grpc_port, serial)
        assert ack.message


async def _online(db: object) -> int:
    return await db.fetchval("SELECT count(*) FROM sensor WHERE online")  # type: ignore[attr-defined]


async def test_two_workers_share_ports_store_reports_relay_changes_and_stop_with_supervisor(
    db, database_url, tmp_path
):
    # One gRPC connection per sensor: the kernel spreads connections, not calls, over workers,
    # and 32 connections all landing on one of two workers happens once in 2^31.
    serials = await _provision(db, 32)
    with trio.fail_after(START_TIMEOUT):
        async with _serving(tmp_path, database_url) as group:
            async with open_live(group.http_port) as client:
                await client.subscribe(serials)
                await _report_each(group.grpc_port, serials)
                seen: set[str] = set()
                while seen != set(serials):
                    message = await client.next("sensor")
                    seen |= {s["serial"] for s in message["sensors"] if s["online"]}

            async def wheels_published() -> bool:
                # Each worker writes its live gauges every second (metrics.LIVE_INTERVAL).
                return total(await scrape_any(group), "droneshield_wheel_sensors") == len(serials)

            await eventually(wheels_published)
            by_pid = await _scrape_each_worker(group)
            # Without their supervisor (SIGKILLed, so it stops no one), the workers stop by
            # themselves rather than keep the ports.
            group.serve.process.kill()

            async def all_stopped() -> bool:
                return not any(running(pid) for pid in group.workers.values())

            await eventually(all_stopped)
    assert not listening(group.grpc_port)
    assert not listening(group.http_port)
    pids = {str(pid) for pid in group.workers.values()}
    assert set(by_pid) == set(group.workers.values())
    for got in by_pid.values():
        # Whichever worker answers: process counters summed over both, fleet gauges fleet-wide.
        assert total(got, "droneshield_reports_total") == len(serials)
        assert value(got, "droneshield_transitions_total", to="online") == len(serials)
        assert value(got, "droneshield_sensors", status="online") == len(serials)
        assert {labels for name, labels in got if name == "droneshield_worker_info"} == {
            (("pid", pid),) for pid in pids
        }
        wheels = {
            dict(labels)["pid"]: v
            for (name, labels), v in got.items()
            if name == "droneshield_wheel_sensors"
        }
        # Both committed reports (the wheel holds the sensors each one committed), so the
        # client (on one of them) saw changes the other committed.
        assert set(wheels) == pids
        assert all(n > 0 for n in wheels.values()), wheels
    assert await _online(db) == len(serials)


def _delivered_by_worker(group: Group) -> dict[int, float]:
    """Webhook events each worker counted as delivered, read from its own counter file in the
    shared multiprocess directory (what a scrape sums)."""
    pid = next(iter(group.workers.values()))
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    shared = Path(environ[metrics.MULTIPROC_ENV])
    counted = {}
    for worker in group.workers.values():
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(shared / f"counter_{worker}.db", alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
            got = samples(generate_latest(registry).decode())
        counted[worker] = value(got, "droneshield_webhook_deliveries_total", outcome="delivered")
    return {pid: n or 0.0 for pid, n in counted.items()}


async def test_webhook_deliveries_are_counted_over_all_workers(db, database_url, tmp_path, nursery):
    # Reports until both workers' dispatchers have sent: each report lands on the worker the
    # kernel picks for its connection. Five were not always enough (a CI run of 2026-12-03 ran
    # out of serials); the loop stops at the first report after which both have sent.
    serials = await _provision(db, 40)
    receiver: Receiver = await nursery.start(Receiver().serve)
    # More webhooks than one dispatcher serves at once: both workers' dispatchers send.
    hooks = ENDPOINTS_MAX + 8
    with trio.fail_after(START_TIMEOUT):
        async with _serving(tmp_path, database_url, webhook_allow_hosts="127.0.0.1") as group:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{group.http_port}") as api:
                for n in range(hooks):
                    body = {"url": f"{receiver.url}?n={n}", "events": ["sensor.online"]}
                    created = await api.post("/webhooks", json={**body, "secret": "s" * 16})
                    assert created.status_code == 201, created.text
            sent, both = 0, False
            while not both:  # a few reports at most
                await _report_each(group.grpc_port, [serials[sent]])
                sent += 1
                events = hooks * sent
                await receiver.wait_until(lambda r, n=events: len(r.event_ids()) == n)

                async def recorded(n: int = events) -> bool:  # just after each POST's answer
                    return sum(_delivered_by_worker(group).values()) == n

                await eventually(recorded)
                both = all(n > 0 for n in _delivered_by_worker(group).values())
            by_pid = await _scrape_each_worker(group)
    assert len(set(receiver.event_ids())) == hooks * sent
    for got in by_pid.values():
        # Whichever worker answers: the sum of what each sent.
        assert value(got, "droneshield_webhook_deliveries_total", outcome="delivered") == (
            hooks * sent
        )


async def test_a_killed_worker_is_restarted_and_sigterm_stops_all_with_exit_0(
    db, database_url, tmp_path
):
    serials = await _provision(db, 10)
    with trio.fail_after(START_TIMEOUT):
        async with _serving(tmp_path, database_url) as group:
            serve = group.serve
            killed = group.workers["worker 1"]
            mark = len(serve.lines)
            os.kill(killed, signal.SIGKILL)
            await serve.wait_for("worker 1 exited with code -9; restarting it in", start=mark)
            line = await serve.wait_for("worker 1 serving (pid", start=mark)
            restarted = int(SERVING.search(line)[2])  # type: ignore[index]
            assert restarted != killed
            await _report_each(group.grpc_port, serials)
            assert await _online(db) == len(serials)
            serve.process.send_signal(signal.SIGTERM)
            assert await serve.exited() == 0
    assert not running(killed)
    assert [pid for pid in (*group.workers.values(), restarted) if running(pid)] == []
    assert not listening(group.grpc_port)
    assert not listening(group.http_port)


async def test_a_worker_that_keeps_failing_to_start_makes_serve_give_up_and_fail(
    database_url, tmp_path
):
    # Workers create their upload directories under the data directory: not under a file.
    (tmp_path / "file").write_text("")
    env = _env(tmp_path / "file", database_url)
    with trio.fail_after(START_TIMEOUT):
        async with spawn(SERVE, env=env) as serve:
            assert await serve.exited() == 1
    gave_up = GAVE_UP.search(serve.output())
    assert gave_up is not None, serve.output()
    starts = [line for line in serve.lines if f": {gave_up[1]} started (pid " in line]
    assert len(starts) == int(gave_up[2]) == Restarts().limit
    assert serve.lines[-1].startswith("droneshield: worker 1 exited with code 1; it failed ")


async def test_a_port_another_program_holds_fails_at_once_without_starting_workers(
    database_url, tmp_path
):
    http_port = free_port()
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody can share this port
        taken.bind(("127.0.0.1", http_port))
        taken.listen()
        env = _env(tmp_path, database_url, http_port=str(http_port))
        with trio.fail_after(START_TIMEOUT):
            async with spawn(SERVE, env=env) as serve:
                assert await serve.exited() == 1
    assert f"HTTP port 127.0.0.1:{http_port} is in use" in serve.output()
    assert not any("worker 1 started" in line for line in serve.lines)


async def test_a_second_group_on_the_ports_of_a_running_one_fails_at_once(database_url, tmp_path):
    with trio.fail_after(START_TIMEOUT):
        async with _serving(tmp_path, database_url) as first:
            ports = {"grpc_port": str(first.grpc_port), "http_port": str(first.http_port)}
            async with spawn(SERVE, env=_env(tmp_path, database_url, **ports)) as second:
                assert await second.exited() == 1
    assert f"HTTP port 127.0.0.1:{first.http_port} is in use" in second.output()
    assert not any("worker 1 started" in line for line in second.lines)


async def test_a_second_group_fails_while_the_first_has_no_worker_listening_yet(
    database_url, tmp_path
):
    # The first group's workers keep failing to start (their data directory is a file), so for
    # seconds its supervisor holds the ports with no worker listening: a plain bind would pass.
    (tmp_path / "file").write_text("")
    ports = {"grpc_port": str(free_port()), "http_port": str(free_port())}
    with trio.fail_after(START_TIMEOUT):
        async with spawn(SERVE, env=_env(tmp_path / "file", database_url, **ports)) as first:
            await first.wait_for("worker 1 exited with code 1; restarting it in")
            async with spawn(SERVE, env=_env(tmp_path, database_url, **ports)) as second:
                with trio.fail_after(30):
                    assert await second.exited() == 1
            assert first.process.returncode is None  # it was still starting
    assert f"gRPC port 127.0.0.1:{ports['grpc_port']} is in use" in second.output()
    assert not any("worker 1 started" in line for line in second.lines)


def test_restart_delay_doubles_up_to_a_cap_and_a_healthy_run_forgets_failures():
    restarts = Restarts(first=0.5, cap=3.0, healthy_after=60.0, limit=6)
    assert [restarts.after_exit(1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert restarts.after_exit(60.0) == 0.5  # ran long enough: a first failure again
    assert restarts.failures == 1


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_restarts_stop_after_the_limit_of_failures_in_a_row(limit):
    restarts = Restarts(limit=limit)
    delays = [restarts.after_exit(0.1) for _ in range(limit)]
    assert delays[-1] is None
    assert None not in delays[:-1]
