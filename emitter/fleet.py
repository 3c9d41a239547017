"""Fleet mode: every sensor heartbeats on its own jittered schedule, some go silent for a while
and come back, some never report, versions upgrade over time (see `schedule.Fleet`)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import NoReturn

from .link import Failure, Link
from .schedule import Fleet, FleetShape

log = logging.getLogger(__name__)


async def run_fleet(
    link: Link,
    serials: Sequence[str],
    shape: FleetShape,
    *,
    concurrency: int,
    report_every: float,
    rng: random.Random,
) -> NoReturn:
    """Heartbeat until cancelled, at most `concurrency` calls in flight, logging a census every
    `report_every` seconds. Nothing is sent while the link backs off.

    Cancellation: stops every call in flight (they belong to this function's task group).

    Raises:
        Whatever a send raises that is not a call failure (a bug).
    """
    loop = asyncio.get_running_loop()
    fleet = Fleet(serials, shape, rng, loop.time())
    log.info(
        "fleet: %d sensors (%d never report), heartbeat every %.1f s ± %.0f%%, "
        "%.0f%% silent at a time for %.0f s on average",
        len(serials),
        len(fleet.never_reporting),
        shape.interval,
        shape.jitter * 100,
        shape.churn * 100,
        shape.silence,
    )
    outcomes: Counter[str] = Counter()
    slots = asyncio.Semaphore(concurrency)

    async def send(serial: str, version: str) -> None:
        try:
            answer = await link.send_status(serial, version)
        finally:
            slots.release()
        outcomes[answer.code if isinstance(answer, Failure) else "OK"] += 1

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_census(fleet, outcomes, report_every))
        while True:
            await asyncio.sleep(max(0.0, fleet.next_due() - loop.time()))
            await link.ready()
            for serial, version in fleet.pop_due(loop.time()):
                await slots.acquire()
                tasks.create_task(send(serial, version))


async def _census(fleet: Fleet, outcomes: Counter[str], every: float) -> NoReturn:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        silent, versions = fleet.census(loop.time())
        log.info(
            "fleet: %s; %d silent now; versions %s",
            ", ".join(f"{code} {n}" for code, n in sorted(outcomes.items())) or "nothing sent",
            silent,
            ", ".join(f"{v} {n}" for v, n in sorted(versions.items())),
        )
