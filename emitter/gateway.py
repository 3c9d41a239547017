"""Gateway mode: the fleet as it reaches a real deployment, through G gateways. Each gateway owns
a share of the sensors (`schedule.partition`), runs their heartbeats on the fleet timetable
(churn, silences, sensors that never report, upgrades up to a never-uploaded version), and every
`flush` seconds sends what fell due as `SendStatusBatch` calls of at most `batch_max` reports,
over its own connection. What was offered and acknowledged goes to a record file (see
`record.AckRecord`) that the soak reads every period and checks the daemon against at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import NoReturn, TextIO

from droneshield.ingest.wire import Rejection

from .link import Failure, Link
from .record import AckRecord
from .schedule import Fleet, FleetShape, chunks, gateway_phase, partition

log = logging.getLogger(__name__)


def not_committed(rejected: Iterable[Rejection]) -> set[int]:
    """Indexes of a batch's reports that were not committed: every rejection but
    VERSION_NOT_STORED (committed without its version), so UNAVAILABLE and also NOT_FOUND (a
    sensor retired or never provisioned) and INVALID_ARGUMENT."""
    return {r.index for r in rejected if r.code != "VERSION_NOT_STORED"}


async def run_gateways(
    links: Sequence[Link],
    serials: list[str],
    shape: FleetShape,
    *,
    flush: float,
    batch_max: int,
    period: float,
    gap_min: float,
    record_to: TextIO,
    rng: random.Random,
) -> NoReturn:
    """One gateway per link, until cancelled; a period line every `period` s; on the way out
    (cancelled included) the final record.

    Cancellation: stops every call in flight, then writes the final record.
    """
    loop = asyncio.get_running_loop()
    record = AckRecord(serials, gap_min, time.time())
    shares = partition(serials, len(links))
    start = loop.time()
    fleets = [Fleet(share, shape, random.Random(rng.random()), start) for share in shares]
    log.info(
        "gateways: %d sensors over %d gateways, heartbeat %.1f s, flush every %.2f s, "
        "batches of at most %d",
        len(serials),
        len(links),
        shape.interval,
        flush,
        batch_max,
    )

    async def send(link: Link, batch: list[tuple[str, str]]) -> None:
        names = [s for s, _ in batch]
        sent = time.time()
        record.sending(names, sent)
        answer = await link.send_batch(batch)
        now = time.time()
        if isinstance(answer, Failure):
            record.answered(names, sent, now, set(), answer.code)
            return
        failed = not_committed(answer.rejected)
        for r in answer.rejected:
            record.period.errors[r.code] += 1
        record.answered(names, sent, now, failed, None)

    async def gateway(index: int, link: Link, fleet: Fleet, tasks: asyncio.TaskGroup) -> NoReturn:
        tick = start + gateway_phase(index, len(links), flush)
        while True:
            tick += flush
            await asyncio.sleep(max(0.0, tick - loop.time()))
            await link.ready()
            for batch in chunks(fleet.pop_due(loop.time()), batch_max):
                tasks.create_task(send(link, batch))

    async def periods() -> NoReturn:
        while True:
            await asyncio.sleep(period)
            record.rotate(time.time(), record_to)

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(periods())
            for index, (link, fleet) in enumerate(zip(links, fleets, strict=True)):
                tasks.create_task(gateway(index, link, fleet, tasks))
    finally:
        record.final(time.time(), record_to)
    raise AssertionError("unreachable")  # pragma: no cover
