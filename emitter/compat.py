"""Compat mode: behaves like the original simulator. Every interval one random sensor sends
one unary SendStatus; its first report the daemon answers is v1.0.0 and later ones never go
backwards."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import NoReturn

from .link import Failure, Link
from .schedule import Pacer
from .versions import compat_next, shown

log = logging.getLogger(__name__)


async def run_compat(
    link: Link, serials: Sequence[str], *, interval: float, rng: random.Random
) -> NoReturn:
    """Send until cancelled.

    Cancellation: at any point; a call in flight is abandoned (the daemon may still commit it).
    """
    loop = asyncio.get_running_loop()
    pacer = Pacer(interval)
    # A sensor stays on v1.0.0 until a report of it is answered (one that failed may not have
    # reached the daemon), then moves on from the latest version it sent: a report that failed
    # after the daemon stored it (its answer lost) must not be followed by an older one.
    sent: dict[str, str] = {}
    answered: set[str] = set()
    log.info("compat: %d sensors, one report every %.2f s", len(serials), interval)
    while True:
        await asyncio.sleep(max(0.0, pacer.reserve(loop.time()) - loop.time()))
        serial = rng.choice(serials)
        version = compat_next(sent[serial] if serial in answered else None, rng)
        sent[serial] = version
        answer = await link.send_status(serial, shown(version))
        if isinstance(answer, Failure):
            log.info("%s %s → %s: %s", serial, shown(version), answer.code, answer.message)
        else:
            answered.add(serial)
            log.info("%s %s → %s", serial, shown(version), answer.message)
