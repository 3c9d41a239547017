"""Load mode: N sensors at a target rate over unary or batch calls, printing achieved rate,
errors and latency percentiles every few seconds, and a summary at the end."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Sequence
from typing import Literal, NoReturn

from droneshield.ingest.wire import BatchAck, StatusAck

from .link import Failure, Link
from .schedule import Pacer
from .stats import Reservoir, Tally
from .versions import RELEASED, shown

log = logging.getLogger(__name__)

Rpc = Literal["unary", "batch"]


class _Recorder:
    """A window tally printed and reset every period, and the run's totals."""

    def __init__(self, now: float, rng: random.Random) -> None:
        self.window = Tally(now)
        self.total = Tally(now)
        self.sample = Reservoir(rng)

    def record(self, answer: BatchAck | StatusAck | Failure, reports: int, latency: float) -> None:
        tallies = (self.window, self.total)
        for tally in tallies:
            tally.rpcs += 1
        if isinstance(answer, Failure):
            for tally in tallies:
                tally.errors[answer.code] += 1
            return
        rejected = [r.code for r in answer.rejected] if isinstance(answer, BatchAck) else []
        for tally in tallies:
            tally.reports += answer.accepted if isinstance(answer, BatchAck) else reports
            tally.rejected.update(rejected)
        self.window.latencies.append(latency)
        self.sample.add(latency)

    def flush(self, now: float) -> None:
        print(self.window.line("load", now), flush=True)
        self.window = Tally(now)

    def summary(self, now: float) -> None:
        print(self.total.line("load-total", now, self.sample.values), flush=True)


async def run_load(
    link: Link,
    serials: Sequence[str],
    *,
    rate: float,
    rpc: Rpc,
    batch_size: int,
    concurrency: int,
    report_every: float,
    rng: random.Random,
) -> NoReturn:
    """Send until cancelled; `rate` is reports per second (0: as fast as `concurrency` callers
    go). Latency is measured per call, after any backoff pause.

    Cancellation: prints the run's summary line, then stops every call in flight.
    """
    loop = asyncio.get_running_loop()
    per_call = min(batch_size, len(serials)) if rpc == "batch" else 1
    if rpc == "batch" and per_call < batch_size:
        log.warning("batches cut to %d: a batch never repeats a serial", per_call)
    # Each sensor keeps one version, as heartbeats do: load measures presence updates, not a
    # fleet whose versions change on every report.
    versions = [shown(RELEASED[i % len(RELEASED)]) for i in range(len(serials))]
    pacer = Pacer(per_call / rate if rate > 0 else 0.0)
    recorder = _Recorder(loop.time(), rng)
    calls = itertools.count()
    log.info(
        "load: %d sensors, target %s reports/s, %s calls of %d, %d concurrent",
        len(serials),
        f"{rate:g}" if rate > 0 else "unlimited",
        rpc,
        per_call,
        concurrency,
    )

    async def caller() -> NoReturn:
        while True:
            await asyncio.sleep(max(0.0, pacer.reserve(loop.time()) - loop.time()))
            await link.ready()
            first = next(calls) * per_call
            picked = [(first + k) % len(serials) for k in range(per_call)]
            batch = [(serials[i], versions[i]) for i in picked]
            started = loop.time()
            if rpc == "batch":
                answer: BatchAck | StatusAck | Failure = await link.send_batch(batch)
            else:
                answer = await link.send_status(*batch[0])
            recorder.record(answer, per_call, loop.time() - started)

    async def reporter() -> NoReturn:
        while True:
            await asyncio.sleep(report_every)
            recorder.flush(loop.time())

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(reporter())
            for _ in range(concurrency):
                tasks.create_task(caller())
    finally:
        recorder.summary(loop.time())
    raise AssertionError("unreachable")  # pragma: no cover
