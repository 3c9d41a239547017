"""What the load generators share: running under trio with grpclib reachable, room for
thousands of sockets, and sending reports as batches, either as fast as the daemon acks them or
open-loop at a steady rate.

Load generators run in their own process (`support.run_client`), as trio programs with a
trio-asyncio loop open, because the WebSocket clients (trio-websocket) and the gRPC client
(grpclib, asyncio) must share one clock: latencies are measured from a send to a receipt. The
loop is the daemon's (`aio_loop.open_loop`): on trio-asyncio's own, which runs one asyncio
callback per pass of trio's scheduler, a client was slower than a real one.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from grpclib import GRPCError, Status

from droneshield import aio_loop
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch, DeviceStatusServiceStub
from tests.support.grpc_clients import aio

Pairs = Sequence[tuple[str, str]]  # (serial, version) reports of one batch


def main(load: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run `load(*args)` under trio with the daemon's trio-asyncio loop open, with the
    open-files limit raised, and print its result as the last stdout line (what `run_client`
    returns)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run() -> Any:
        async with aio_loop.open_loop():
            return await load(*args)

    print(json.dumps(trio.run(run)))


async def start_all(
    nursery: trio.Nursery,
    task: Callable[..., Awaitable[Any]],
    args: Iterable[tuple[Any, ...]],
    concurrency: int,
) -> None:
    """Start `task(*a, task_status=…)` in `nursery` for every `a` in `args`, `concurrency` of
    them starting at once (thousands of WebSocket handshakes one by one take many seconds, all at
    once overflow the server's listen backlog). Returns once every one has started."""
    limit = trio.CapacityLimiter(concurrency)

    async def start(a: tuple[Any, ...]) -> None:
        async with limit:
            await nursery.start(task, *a)

    async with trio.open_nursery() as starting:
        for a in args:
            starting.start_soon(start, a)


async def send_batch(stub: DeviceStatusServiceStub, pairs: Pairs) -> int:
    """One SendStatusBatch call; how many of its reports were answered UNAVAILABLE (they
    waited past their deadline while the rest committed; clients retry them).

    Raises:
        RuntimeError: the daemon rejected a report for another reason (the benchmark would
            measure errors).
    """
    batch = DeviceStatusBatch(
        statuses=[DeviceStatus(serial=s, software_version=v) for s, v in pairs]
    )
    ack = await aio(stub.send_status_batch, batch)
    other = [r for r in ack.rejected if r.code != Status.UNAVAILABLE.name]
    if other:
        raise RuntimeError(f"the daemon rejected reports: {other[:3]}")
    return len(ack.rejected)


async def flood(
    stub: DeviceStatusServiceStub, batches: Sequence[Pairs], concurrency: int
) -> list[float]:
    """Send every batch, `concurrency` calls in flight, as fast as the daemon acks them.
    Returns each call's latency (seconds).

    Raises:
        RuntimeError: a report was not committed (closed-loop load should never see that).
    """
    latencies: list[float] = []
    work = iter(batches)  # shared: each batch goes to whichever caller is free

    async def caller() -> None:
        for pairs in work:
            began = trio.current_time()
            if unavailable := await send_batch(stub, pairs):
                raise RuntimeError(f"{unavailable} reports were not committed in time")
            latencies.append(trio.current_time() - began)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return latencies


@dataclass
class Tally:
    """What a paced sender has seen so far; readable while it runs."""

    latencies: list[float] = field(default_factory=list)  # seconds per acknowledged call
    unavailable: int = 0  # reports answered UNAVAILABLE (not committed before their deadline)


async def paced(
    stub: DeviceStatusServiceStub,
    batches: Iterable[Pairs],
    per_second: float,
    tally: Tally,
    on_send: Callable[[Pairs], None] = lambda pairs: None,
) -> None:
    """Send batch i at `i / per_second` seconds from now whatever the acks do (open loop: a
    slow ack does not slow the schedule, so queueing in the daemon shows in the latencies).
    `on_send` sees each batch just before its call starts. An endless `batches` runs until
    cancelled. UNAVAILABLE is counted, not raised: the contract has clients retry it, and a
    benchmark reports it."""

    async def one(pairs: Pairs) -> None:
        began = trio.current_time()
        on_send(pairs)
        try:
            tally.unavailable += await send_batch(stub, pairs)
        except GRPCError as exc:
            if exc.status != Status.UNAVAILABLE:
                raise
            tally.unavailable += len(pairs)
        else:
            tally.latencies.append(trio.current_time() - began)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, pairs in enumerate(batches):
            await trio.sleep_until(start + i / per_second)
            nursery.start_soon(one, pairs)
