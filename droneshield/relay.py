"""Cross-instance fan-out: the changes this daemon commits reach the other daemons' hubs, theirs
reach ours, over a bus (`bus/`: PostgreSQL NOTIFY by default, NATS JetStream for many hosts).

Only what a peer needs is sent. Transitions (a sensor came online, went offline, got a new
version) go whenever there is a peer; a heartbeat (a report that only moved `last_seen_at`)
goes only when some other daemon's WebSocket clients watch that sensor, which each daemon
announces on the bus (`interest.py`). At a million sensors on a 10 s heartbeat that is the
difference between 100k messages a second and the ~1k transitions plus what is on someone's
screen.

A daemon alone (the embedded default) sends nothing. It is alone when it knows no live peer,
hears its own messages come back (so its silence from peers is real, not its own connection's),
and has heard them for ALONE_AFTER: every peer answers a daemon's ask at once and announces
itself every INTEREST_REFRESH. A peer may start, and its clients load their pages, just before
this daemon hears of it: the transitions left unsent meanwhile would be missing from them for
good. So each announcement lists the peers its daemon knows, each with how many transitions the
daemon had left unsent when it came to know that peer, and a daemon makes its clients reload
when a peer lists it under a number it has not seen from that peer (0 before any), or when a
peer whose last announcement left it out lapses (it may have left transitions unsent and died).
A new daemon next to a lone one reloads once, at its start, when its clients are usually not
there yet; daemons that keep hearing each other never do.

Outgoing changes gather in an outbox (latest state per sensor) for GATHER_INTERVAL and leave
packed many to a message. Each message names its instance, so a daemon skips its own. Messages
the bus could not take are kept (bounded) and sent again; whenever changes may have been lost
for good (the outbox overflowed, the bus reported a gap) the affected hubs resync, and their
clients reload from the database.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NoReturn

import orjson
import trio

from . import metrics
from .bus import Bus, Message
from .bus.notify import NotifyBus
from .db.pool import Pool
from .domain import STATUSES, Before, Edit, SensorState
from .errors import RelayUnavailable
from .hub import Hub
from .interest import PeerInterest

log = logging.getLogger(__name__)

GATHER_INTERVAL: Final = 0.05  # seconds local changes gather before they are sent
OUTBOX_MAX: Final = 20_000  # changed sensors waiting to be sent (~6 MB) before peers resync
INTEREST_REFRESH: Final = 5.0  # seconds between two announcements of an unchanged interest
INTEREST_TTL: Final = 3 * INTEREST_REFRESH  # seconds a peer's interest lasts unless refreshed
# Seconds, from when a daemon first hears its own messages (at start, after a gap or a silence),
# during which transitions are sent with no peer known: its ask went out with its announcement,
# and peers answer at once (in GATHER_INTERVAL and a round trip). One heard of later (it started
# later, or answered late) is listed under what was left unsent, and reloads.
ALONE_AFTER: Final = 1.0
# Seconds without hearing its own messages (announced every INTEREST_REFRESH) after which a
# daemon no longer trusts its silence from peers: its receiving side is down, not theirs.
DEAF_AFTER: Final = 2 * INTEREST_REFRESH
# Seconds a peer's last listing of us is remembered after it was last heard (a peer that comes
# back later and lists us under a number above 0 makes our clients reload, needlessly but safely).
LISTING_KEPT: Final = 10 * INTEREST_TTL
RETRY_FIRST: Final = 0.1  # seconds
RETRY_MAX: Final = 5.0  # seconds

_SENT: Final = metrics.RELAY_CHANGES.labels("sent")
_RECEIVED: Final = metrics.RELAY_CHANGES.labels("received")
_KEPT: Final = metrics.RELAY_CHANGES.labels("kept")
_ALONE: Final = metrics.RELAY_CHANGES.labels("alone")
_ROW_ERRORS: Final = (ValueError, TypeError, IndexError, KeyError, AttributeError)


def open_bus(relay_url: str | None, relay_stream: str | None, pool: Pool, database_url: str) -> Bus:
    """The bus `relay_url` names (`nats://…`, on stream `relay_stream`, by default the
    database's), else NOTIFY on the database. nats-py is imported only by a daemon that uses it
    (it is ~60 ms of start-up)."""
    if relay_url is None:
        return NotifyBus(pool, database_url)
    from .bus.jetstream import JetStreamBus, default_stream

    return JetStreamBus(relay_url, relay_stream or default_stream(database_url))


def shard_of(serial: str, shards: int) -> int:
    """Which of `shards` parts of the serial space `serial` falls in (stable across hosts)."""
    return zlib.crc32(serial.encode()) % shards


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
            None if change.edit is None else [change.edit.label, change.edit.retired],
            change.before,
        ]
    )


def _field(row: list[Any], index: int, default: Any = None) -> Any:
    """A relayed row's field, or `default` in payloads of a daemon that predates it."""
    return row[index] if len(row) > index else default


def _edit(row: list[Any]) -> Edit | None:
    """An operator's edit of a relayed row, if it carries one."""
    edit = _field(row, 9)
    if edit is None:
        return None
    label, retired = edit
    return Edit(label, bool(retired))


def _before(row: list[Any]) -> Before | None:
    """The status and version before a relayed transition, if it carries them."""
    before = _field(row, 10)
    if before is None:
        return None
    status, version = before
    if status not in STATUSES or not isinstance(version, str | None):
        raise ValueError(f"not a status and version: {before!r}")
    return status, version


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _pack(head: bytes, items: Iterable[bytes], payload_max: int) -> list[bytes]:
    """`head` + `[item, …]}` per payload, as many items to a payload as fit in payload_max."""
    payloads: list[bytes] = []
    rows: list[bytes] = []
    size = len(head) + 2
    for item in items:
        if rows and size + len(item) + 1 > payload_max:
            payloads.append(head + b",".join(rows) + b"]}")
            rows, size = [], len(head) + 2
        rows.append(item)
        size += len(item) + 1
    if rows:
        payloads.append(head + b",".join(rows) + b"]}")
    return payloads


def _head(instance: str) -> bytes:
    return b'{"i":' + orjson.dumps(instance)


def encode(instance: str, changes: Sequence[SensorState], payload_max: int) -> list[str]:
    """Payloads `{"i": instance, "c": [[id, serial, version, status, lastSeen, changed,
    reportedVersion, heartbeat, site, [label, retired] or null, [status, version] before or
    null], …]}`, each under `payload_max` bytes."""
    head = _head(instance) + b',"c":['
    return [p.decode() for p in _pack(head, map(_row, changes), payload_max)]


def encode_interest(
    instance: str,
    generation: int,
    everything: bool,
    serials: Collection[str],
    known: Mapping[str, int],
    payload_max: int,
) -> list[str]:
    """Announcement `generation` of what `instance`'s clients watch, in numbered parts
    `{"i": instance, "w": [generation, part, parts, everything], "k": {peer: unsent, …},
    "s": [serial, …]}`; `known`: the peers `instance` knows, each with the transitions it had
    left unsent when it came to know that peer (every part carries them)."""
    listed = b',"k":' + orjson.dumps(dict(known)) + b',"s":['
    chunks = _pack(b"", map(orjson.dumps, serials), payload_max - 100 - len(listed)) or [b"]}"]
    head = _head(instance) + b',"w":['
    return [
        (
            head + f"{generation},{n},{len(chunks)},{int(everything)}]".encode() + listed + chunk
        ).decode()
        for n, chunk in enumerate(chunks)
    ]


def resync_payload(instance: str) -> str:
    """Tells peers that changes from `instance` were lost."""
    return orjson.dumps({"i": instance, "resync": True}).decode()


def ask_payload(instance: str) -> str:
    """Asks peers to announce their interest now (`instance` is new, or lost track)."""
    return orjson.dumps({"i": instance, "ask": True}).decode()


def _load(payload: str) -> dict[str, Any]:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"malformed relay message: {exc!r}") from None
    if not isinstance(message, dict):
        raise ValueError("malformed relay message: not an object")
    return message


def _changes(message: dict[str, Any], wanted: Callable[[str], bool]) -> list[SensorState]:
    try:
        return [
            SensorState(
                row[0],
                row[1],
                row[2],
                row[3],
                _when(row[4]),
                _when(row[5]),
                reported_version=_field(row, 6),
                heartbeat=_field(row, 7, False),
                site=_field(row, 8),
                edit=_edit(row),
                before=_before(row),
            )
            for row in message["c"]
            if wanted(row[1])
        ]
    except _ROW_ERRORS as exc:
        raise ValueError(f"malformed relay message: {exc!r}") from None


def decode(payload: str, wanted: Callable[[str], bool]) -> list[SensorState] | None:
    """The changes of a payload whose serial is `wanted` (others are not even built); None
    when the payload asks for a resync.

    Raises:
        ValueError: not a change payload this module wrote.
    """
    message = _load(payload)
    if message.get("resync"):
        return None
    return _changes(message, wanted)


@dataclass
class _Listing:
    """What a peer's announcements last said of this daemon."""

    number: int = 0  # the transitions it had left unsent when it came to know us
    left_out: bool = False  # its last announcement did not list us
    heard: float = 0.0  # when it last announced


class Relay:
    """Forwards this daemon's changes to its peers and theirs into the hub."""

    def __init__(self, hub: Hub, bus: Bus) -> None:
        self.instance = uuid.uuid4().hex[:16]
        self.peers = PeerInterest(INTEREST_TTL)
        self._hub = hub
        self._bus = bus
        self._own_prefix = _head(self.instance).decode()
        self._keys = itertools.count()  # numbers this daemon's messages (`Message.key`)
        self._announce_now = trio.Event()  # a peer asked, or we must ask (after a gap)
        self._must_ask = True  # at start we know no peer's interest
        self._heard_self_at = -math.inf  # when one of our own messages last came back
        self._alone_from = math.inf  # no transition is left unsent before (ALONE_AFTER)
        # The live peers, each with `unsent` when it became live (our announcements list them).
        self._met: dict[str, int] = {}
        # What each peer's announcements say of us (a change may make our clients reload).
        self._listings: dict[str, _Listing] = {}
        # Counters, for tests and metrics; `wait_for` watches them (and `peers`) change.
        self.sent = 0  # changes sent to peers
        self.unsent = 0  # transitions not sent: no peer was on the bus
        self.heartbeats_kept = 0  # heartbeats not sent: no peer watches their sensor
        self.received = 0  # peers' changes published into the hub
        self.own_skipped = 0  # own messages that came back and were ignored
        self.retries = 0  # attempts to send changes the bus did not take
        self._progress = trio.Event()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, looking again after each message the relay sends
        or handles and each attempt to send that fails (what it counts and what peers announce
        change only then). The caller bounds the wait."""
        while not condition():
            await self._progress.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def wants(self, serial: str) -> bool:
        """Whether a peer's clients watch `serial` (its heartbeats are relayed)."""
        return self.peers.wants(serial)

    def kept(self, heartbeats: int) -> None:
        """Count heartbeats left home before they reached the outbox (no client anywhere
        watches their sensors, so no change was even built for them)."""
        self.heartbeats_kept += heartbeats
        _KEPT.inc(heartbeats)

    def _message(self, shard: int | None, payload: str) -> Message:
        """A message under a key no other message of any daemon has."""
        return Message(shard, payload, f"{self.instance}.{next(self._keys)}")

    def _relayed(self, change: SensorState) -> bool:
        """Outbox filter: every transition while there may be a peer, and each heartbeat a
        peer's clients watch (the others are counted). Called once per change this daemon
        publishes."""
        if change.heartbeat:
            if self.peers.wants(change.serial):
                return True
            self.heartbeats_kept += 1
            _KEPT.inc()
            return False
        if self.peers.peers:
            return True
        now = trio.current_time()
        if now < self._alone_from or now - self._heard_self_at > DEAF_AFTER:
            return True
        self.unsent += 1
        _ALONE.inc()
        return False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `started()` once the bus receives and changes are collected.

        Raises:
            Whatever the bus's first connection fails with (later failures are retried).
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._bus.serve, self._handle, self._gap)
            await nursery.start(self._forward)
            await nursery.start(self._announce)
            task_status.started()

    async def _forward(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        # The hub brings what this daemon publishes: the writer's committed reports (flagged
        # `heartbeat` when they only moved `last_seen_at`) and the presence tracker's expiries.
        backlog: list[Message] = []  # sent again, the same messages, until the bus takes them
        backlog_changes = 0
        owe_resync = False
        # The resync owed, the same message on every attempt until one is taken, unless more
        # is lost meanwhile: an attempt the bus stored (its answer lost) had peers reload
        # before that loss, so the next needs a key of its own or the bus drops it as a copy.
        resync: Message | None = None
        delay = RETRY_FIRST
        with self._hub.outbox(max_pending=OUTBOX_MAX, match=self._relayed) as box:
            task_status.started()
            while True:
                if not backlog and not owe_resync:
                    await box.wait()
                await trio.sleep(GATHER_INTERVAL)
                lost = box.overflowed
                changes = box.take()
                backlog += self._messages(changes)
                backlog_changes += len(changes)
                if backlog_changes > OUTBOX_MAX:
                    backlog, backlog_changes, lost = [], 0, True
                if lost:
                    owe_resync, resync = True, None
                if owe_resync:
                    if resync is None:
                        resync = self._message(None, resync_payload(self.instance))
                    backlog.append(resync)
                try:
                    await self._bus.publish(backlog)
                except RelayUnavailable as exc:
                    if owe_resync:
                        backlog.pop()
                    log.warning("relaying %d changes failed (%s); retrying", backlog_changes, exc)
                    self.retries += 1
                    metrics.RELAY_RETRIES.inc()
                    self._progressed()
                    await trio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                self.sent += backlog_changes
                _SENT.inc(backlog_changes)
                backlog, backlog_changes, owe_resync, resync = [], 0, False, None
                delay = RETRY_FIRST
                self._progressed()

    def _messages(self, changes: list[SensorState]) -> list[Message]:
        bus = self._bus
        if bus.shards == 1:
            return [self._message(0, p) for p in encode(self.instance, changes, bus.payload_max)]
        by_shard: dict[int, list[SensorState]] = {}
        for change in changes:
            by_shard.setdefault(shard_of(change.serial, bus.shards), []).append(change)
        return [
            self._message(shard, p)
            for shard, group in by_shard.items()
            for p in encode(self.instance, group, bus.payload_max)
        ]

    async def _announce(self, *, task_status: trio.TaskStatus[None]) -> NoReturn:
        """Announce what our clients watch: at once when it changes or a peer asks, else every
        INTEREST_REFRESH; and let peers' interests lapse."""
        generation = 0
        announced = -1
        due = trio.current_time()
        delay = RETRY_FIRST
        task_status.started()
        while True:
            # Polled: the hub's subscriptions change in WebSocket handlers that know nothing
            # of the relay, and a look at a counter every GATHER_INTERVAL costs nothing.
            with trio.move_on_at(due):
                while self._hub.interest_version == announced:
                    with trio.move_on_after(GATHER_INTERVAL):
                        await self._announce_now.wait()
                    if self._announce_now.is_set():
                        break
            self._announce_now = trio.Event()
            now = trio.current_time()
            self._lapse(self.peers.expire(now), now)
            version = self._hub.interest_version
            everything, serials = self._hub.interest()
            messages = [
                self._message(None, p)
                for p in encode_interest(
                    self.instance,
                    generation,
                    everything,
                    list(serials),
                    self._met,
                    self._bus.payload_max,
                )
            ]
            asking = self._must_ask
            if asking:
                messages.append(self._message(None, ask_payload(self.instance)))
            # Every attempt has a number of its own: parts of a failed one may have reached
            # peers, and a retry under its number (maybe with other serials, in other parts)
            # would be assembled with them.
            generation += 1
            try:
                await self._bus.publish(messages)
            except RelayUnavailable as exc:
                log.warning("announcing interest failed (%s); retrying", exc)
                # The backoff holds whatever changes meanwhile (subscriptions come and go while
                # the bus is down): the retry announces the latest interest.
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            announced = version
            if asking:
                self._must_ask = False
            due = now + INTEREST_REFRESH
            await trio.sleep(GATHER_INTERVAL)  # a burst of (re)subscriptions: one announcement

    def _gap(self) -> None:
        """Messages were lost on the way here: our clients reload, and we ask the peers for
        their interest again (their announcements may be among what was lost)."""
        self._resync()
        self._must_ask = True
        self._announce_now.set()
        self._heard_self_at = -math.inf  # until we hear ourselves again, after the new ask

    def _handle(self, payload: str) -> None:
        try:
            self._apply(payload)
        finally:
            self._progressed()

    def _apply(self, payload: str) -> None:
        if payload.startswith(self._own_prefix):
            self.own_skipped += 1
            self._heard_self()
            return
        try:
            message = _load(payload)
            if "c" in message:
                changes = _changes(message, self._hub.wants)
                self.received += len(changes)
                _RECEIVED.inc(len(changes))
                self._hub.publish_remote(changes)
            elif "w" in message:
                self._announced(str(message["i"]), message)
            elif message.get("ask"):
                self._announce_now.set()
            elif message.get("resync"):
                self._resync()
        except (*_ROW_ERRORS, ValueError):
            log.exception("ignoring a relay message")

    def _heard_self(self) -> None:
        """One of our messages came back: our receiving side works. After a silence (at start,
        after a gap) we ask the peers again, and wait ALONE_AFTER for their answers before we
        take their silence as being alone."""
        now = trio.current_time()
        if now - self._heard_self_at > DEAF_AFTER:
            self._alone_from = now + ALONE_AFTER
            if self._heard_self_at > -math.inf:  # a silence (a start or a gap asked already)
                self._must_ask = True
                self._announce_now.set()
        self._heard_self_at = now

    def _announced(self, peer: str, message: dict[str, Any]) -> None:
        """A part of `peer`'s announcement: its clients' interest, and whether it knows us."""
        generation, part, parts, everything = message["w"]
        now = trio.current_time()
        met = self.peers.update(
            peer,
            int(generation),
            int(part),
            int(parts),
            bool(everything),
            [s for s in message["s"] if isinstance(s, str)],
            now,
        )
        if met:
            self._met[peer] = self.unsent
            self._announce_now.set()  # so that it learns at once that we send to it
        known = message.get("k")
        if not isinstance(known, dict):
            return  # a daemon that predates listings: it always sends transitions
        listing = self._listings.setdefault(peer, _Listing())
        listing.heard = now
        number = known.get(self.instance)
        listing.left_out = not isinstance(number, int)
        if isinstance(number, int) and number != listing.number:
            listing.number = number
            self._reload(f"peer {peer} had left transitions unsent before it knew this daemon")

    def _lapse(self, lapsed: list[str], now: float) -> None:
        """Forget peers whose interest lapsed. One that had left us out of its last
        announcement may have left transitions unsent since, and will not list us again."""
        for name in lapsed:
            self._met.pop(name, None)
            listing = self._listings.get(name)
            if listing is not None and listing.left_out:
                listing.left_out = False
                self._reload(f"peer {name} left this daemon out, then went silent")
        forgotten = [n for n, entry in self._listings.items() if entry.heard < now - LISTING_KEPT]
        for name in forgotten:
            del self._listings[name]

    def _reload(self, why: str) -> None:
        log.info("%s: clients reload", why)
        self._resync()

    def _resync(self) -> None:
        """Changes may have been lost on their way to our clients: they reload (counted)."""
        metrics.RELAY_GAPS.inc()
        self._hub.resync_all()
