"""Calls balanced across daemons by HAProxy with the shipped configuration
(`deploy/haproxy/haproxy.cfg`): two real `droneshield serve` processes on two ports behind a real
`haproxy` process. One client connection's calls reach both daemons; when one daemon is killed,
nothing it acknowledged is lost and the client's retries are answered by the other."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from grpclib import GRPCError

from droneshield.db import seed
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusServiceStub

from .support.balancer import Balancer, haproxy, server_names, servers_up
from .support.flow import stored
from .support.grpc_clients import aio, grpclib_stub
from .support.processes import Daemon, eventually, serve
from .support.releases import add_software

VERSION = "1.0.0"
SENSORS = 1000
LATE = 100  # reports sent once the killed daemon is out of HAProxy's pool
CALLERS = 16
ATTEMPTS = 5  # per report: the first try and the client's retries
CALL_TIMEOUT = 10.0  # seconds


async def reports_ok(daemon: Daemon) -> int:
    """Reports this daemon acknowledged with their version stored (its own /metrics)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text
    found = re.search(r'^droneshield_reports_total\{outcome="ok"\} ([0-9.e+]+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


class RetryingSender:
    """Sends each serial over one client connection (`stub`), retrying a failed call up to
    ATTEMPTS times, as a sensor or gateway would; records what was acknowledged."""

    def __init__(self, stub: DeviceStatusServiceStub, serials: list[str]) -> None:
        self._stub = stub
        self._serials = iter(serials)
        self.acked: list[str] = []
        self.retried: set[str] = set()  # serials whose first call failed
        self.failures: Counter[str] = Counter()  # failed calls by gRPC status or exception
        self.given_up: list[str] = []
        self._changed = trio.Event()

    async def run(self, callers: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(self._caller)

    async def _caller(self) -> None:
        for serial in self._serials:
            message = DeviceStatus(serial=serial, software_version=VERSION)
            for _ in range(ATTEMPTS):
                try:
                    await aio(self._stub.send_status, message, timeout=CALL_TIMEOUT)
                # A daemon killed under a call that HAProxy cannot send elsewhere resets its
                # stream (or answers 502); whatever the failure, the client tries again.
                except GRPCError as exc:
                    self.failures[exc.status.name] += 1
                except Exception as exc:
                    self.failures[type(exc).__name__] += 1
                else:
                    self.acked.append(serial)
                    break
                self.retried.add(serial)
            else:
                self.given_up.append(serial)
            self._changed.set()
            self._changed = trio.Event()

    async def until_acked(self, count: int) -> None:
        while len(self.acked) < count:
            await self._changed.wait()


async def provisioned(db, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    """`count` sensors and release VERSION: the serials."""
    await seed.seed(db, count)
    await add_software(db, VERSION)
    return [seed.serial_for(n) for n in range(1, count + 1)]


@asynccontextmanager
async def behind_haproxy(
    database_url: str, data_dir: Path
) -> AsyncIterator[tuple[Daemon, Daemon, Balancer, DeviceStatusServiceStub]]:
    """Two daemons, HAProxy in front, and ONE client connection to HAProxy."""
    daemons: dict[str, Daemon] = {}
    both = trio.Event()

    async def hold(name: str) -> None:
        async with serve(database_url, data_dir / name) as daemon:
            daemons[name] = daemon
            if len(daemons) == 2:
                both.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(hold, name)  # together: a daemon takes seconds to start
        await both.wait()
        first, second = daemons["a"], daemons["b"]
        async with (
            haproxy([(d.grpc_port, d.http_port) for d in (first, second)]) as balancer,
            grpclib_stub(balancer.port) as stub,
        ):
            yield first, second, balancer, stub
        nursery.cancel_scope.cancel()


async def test_calls_on_one_connection_spread_over_both_daemons(db, database_url, tmp_path):
    serials = await provisioned(db, 400)
    with trio.fail_after(60):
        async with behind_haproxy(database_url, tmp_path) as (first, second, _, stub):
            sender = RetryingSender(stub, serials)
            await sender.run(CALLERS)
            counts = [await reports_ok(first), await reports_ok(second)]
    assert sorted(sender.acked) == serials
    assert not sender.retried
    assert sum(counts) == len(serials)
    # Per-call balancing: each daemon took a fair share of the one connection's calls.
    assert min(counts) >= len(serials) // 4, counts
    assert await stored(db, VERSION) == set(serials)


async def test_sigkill_of_one_daemon_loses_no_ack_and_retries_land_on_the_other(
    db, database_url, tmp_path
):
    serials = await provisioned(db, SENSORS)
    after = serials[-LATE:]
    with trio.fail_after(90):
        async with behind_haproxy(database_url, tmp_path) as (doomed, survivor, balancer, stub):
            sender = RetryingSender(stub, serials[:-LATE])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.run, CALLERS)
                await sender.until_acked(300)
                doomed.spawned.process.kill()  # SIGKILL, calls in flight
                assert await doomed.spawned.exited() == -9
            # Every report was acknowledged, the cut-off ones on a retry.
            assert not sender.given_up
            assert len(sender.acked) == SENSORS - LATE

            # The killed daemon leaves HAProxy's pool; the same connection carries on.
            survivor_name = server_names()[2]

            async def only_survivor_up() -> bool:
                return await servers_up(balancer.stats_port) == {survivor_name}

            await eventually(only_survivor_up)
            before = await reports_ok(survivor)
            late = RetryingSender(stub, after)
            await late.run(CALLERS)
            assert sorted(late.acked) == sorted(after)
            assert not late.retried
            assert await reports_ok(survivor) - before == len(after)
    # Nothing acknowledged was lost: every acked report is in the database.
    assert set(sender.acked) | set(late.acked) <= await stored(db, VERSION)
