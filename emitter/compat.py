"""Compat mode: behaves like the original simulator. Every interval one random sensor sends
one unary SendStatus; its first report is v1.0.0 and later ones never go backwards."""

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
    current: dict[str, str] = {}
    log.info("compat: %d sensors, one report every %.2f s", len(serials), interval)
    while True:
        await asyncio.sleep(max(0.0, pacer.reserve(loop.time()) - loop.time()))
        serial = rng.choice(serials)
        current[serial] = compat_next(current.get(serial), rng)
        answer = await link.send_status(serial, shown(current[serial]))
        if isinstance(answer, Failure):
            log.info("%s %s → %s: %s", serial, shown(current[serial]), answer.code, answer.message)
        else:
            log.info("%s %s → %s", serial, shown(current[serial]), answer.message)
