"""Cross-instance fan-out: changes this daemon commits reach the other daemons' hubs, theirs
reach ours, through PostgreSQL NOTIFY/LISTEN on one channel.

Outgoing changes gather in a hub outbox (latest state per sensor) for GATHER_INTERVAL and leave
packed many to a payload and up to PAYLOADS_PER_STATEMENT payloads to a statement. Each payload
names its instance, so a daemon skips its own. Whenever changes may have been lost (an outbox
or listen buffer overflowed, a NOTIFY failed, the LISTEN connection was re-established) the
affected hubs are told to resync, and their clients reload from the database.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, NoReturn

import orjson
import trio

from .db.notify import Listener, notify_all, open_listener
from .db.pool import Pool, acquire, is_transient
from .domain import SensorState
from .hub import Hub

log = logging.getLogger(__name__)

CHANNEL: Final = "droneshield_sensor"
PAYLOAD_MAX: Final = 7_900  # bytes; PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more
PAYLOADS_PER_STATEMENT: Final = 100  # measured: ~57k notifications/s at this size
GATHER_INTERVAL: Final = 0.05  # seconds local changes gather before they are sent
OUTBOX_MAX: Final = 20_000  # changed sensors waiting to be sent (~6 MB) before peers resync
LISTEN_BUFFER: Final = 1_000  # payloads (≤ 8 kB each) received, not yet handled, before a resync
CHECK_INTERVAL: Final = 5.0  # seconds of silence before the LISTEN connection is checked
RETRY_FIRST: Final = 0.1  # seconds
RETRY_MAX: Final = 5.0  # seconds

_ROW_ERRORS: Final = (ValueError, TypeError, IndexError, KeyError)


def _row(change: SensorState) -> bytes:
    return orjson.dumps(
        [
            change.id,
            change.serial,
            change.version,
            change.status,
            change.last_seen_at,
            change.status_changed_at,
            change.reported_version,
            change.heartbeat,
            change.site,
        ]
    )


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def encode(instance: str, changes: Sequence[SensorState]) -> list[str]:
    """Payloads `{"i": instance, "c": [[id, serial, version, status, lastSeen, changed,
    reportedVersion, heartbeat, site], …]}`, each under PAYLOAD_MAX bytes."""
    head = b'{"i":' + orjson.dumps(instance) + b',"c":['
    payloads: list[str] = []
    rows: list[bytes] = []
    size = len(head) + 2
    for change in changes:
        row = _row(change)
        if rows and size + len(row) + 1 > PAYLOAD_MAX:
            payloads.append((head + b",".join(rows) + b"]}").decode())
            rows, size = [], len(head) + 2
        rows.append(row)
        size += len(row) + 1
    if rows:
        payloads.append((head + b",".join(rows) + b"]}").decode())
    return payloads


def resync_payload(instance: str) -> str:
    """Tells peers that changes from `instance` were lost."""
    return orjson.dumps({"i": instance, "resync": True}).decode()


def decode(payload: str, wanted: Callable[[str], bool]) -> list[SensorState] | None:
    """The changes of a payload whose serial is `wanted` (others are not even built); None
    when the payload asks for a resync.

    Raises:
        ValueError: not a payload this module wrote.
    """
    try:
        message = orjson.loads(payload)
        if message.get("resync"):
            return None
        return [
            SensorState(
                row[0],
                row[1],
                row[2],
                row[3],
                _when(row[4]),
                _when(row[5]),
                *row[6:9],  # absent in payloads of a daemon that predates them
            )
            for row in message["c"]
            if wanted(row[1])
        ]
    except (*_ROW_ERRORS, AttributeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"malformed {CHANNEL} payload: {exc!r}") from None


class Relay:
    """Forwards this daemon's changes to its peers and theirs into the hub."""

    def __init__(self, hub: Hub, pool: Pool, database_url: str) -> None:
        self.instance = uuid.uuid4().hex[:16]
        self._hub = hub
        self._pool = pool
        self._dsn = database_url
        self._own_prefix = '{"i":' + orjson.dumps(self.instance).decode()
        # Counters, for tests and metrics.
        self.sent = 0  # changes sent to peers
        self.received = 0  # peers' changes published into the hub
        self.own_skipped = 0  # own payloads that came back and were ignored

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `started()` once changes are collected and LISTEN is active.

        Raises:
            OSError, asyncpg errors: the first LISTEN connection could not be made (later
            failures are retried with backoff).
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._forward)
            await nursery.start(self._listen)
            task_status.started()

    async def _forward(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        owe_resync = False
        delay = RETRY_FIRST
        with self._hub.outbox(max_pending=OUTBOX_MAX) as box:
            task_status.started()
            while True:
                if not owe_resync:
                    await box.wait()
                await trio.sleep(GATHER_INTERVAL)
                owe_resync |= box.overflowed
                changes = box.take()
                payloads = encode(self.instance, changes)
                if owe_resync:
                    payloads.append(resync_payload(self.instance))
                try:
                    await self._notify(payloads)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning(
                        "relaying %d changes failed (%r); peers will resync", len(changes), exc
                    )
                    owe_resync = True
                    await trio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                owe_resync = False
                delay = RETRY_FIRST
                self.sent += len(changes)

    async def _notify(self, payloads: list[str]) -> None:
        step = PAYLOADS_PER_STATEMENT
        async with acquire(self._pool) as conn:
            for i in range(0, len(payloads), step):
                await notify_all(conn, CHANNEL, payloads[i : i + step])

    async def _listen(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        started = False
        delay = RETRY_FIRST
        while True:
            try:
                async with open_listener(self._dsn, CHANNEL, buffer=LISTEN_BUFFER) as listener:
                    if started:
                        self._hub.resync_all()  # notifications sent while we were away are lost
                        log.info("LISTEN %s re-established", CHANNEL)
                    else:
                        started = True
                        task_status.started()
                    delay = RETRY_FIRST
                    await self._consume(listener)
            except Exception as exc:
                if not started or not is_transient(exc):
                    raise
                log.warning("LISTEN %s lost (%r); reconnecting in %.1f s", CHANNEL, exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _consume(self, listener: Listener) -> NoReturn:
        while True:
            with trio.move_on_after(CHECK_INTERVAL) as quiet:
                payload = await listener.receive()
            if quiet.cancelled_caught:
                await listener.check()
                continue
            if listener.overflowed:
                listener.overflowed = False
                self._hub.resync_all()
            self._handle(payload)

    def _handle(self, payload: str) -> None:
        if payload.startswith(self._own_prefix):
            self.own_skipped += 1
            return
        try:
            changes = decode(payload, self._hub.wants)
        except ValueError:
            log.exception("ignoring a notification on %s", CHANNEL)
            return
        if changes is None:
            self._hub.resync_all()
            return
        self.received += len(changes)
        self._hub.publish_remote(changes)
