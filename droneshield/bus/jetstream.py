"""The relay over a NATS JetStream stream, for daemons on many hosts. nats-py runs on asyncio: it
crosses into trio here and nowhere else (`aio_as_trio` calls; its callbacks hand messages to a
trio memory channel, as `db/notify.py` does for asyncpg), inside the daemon's trio-asyncio loop.

Each deployment (the daemons of one database) has a stream of its own, named by the
`relay_stream` setting, by default `DRONESHIELD_RELAY_<database name>` (`default_stream`), so
deployments sharing a NATS server never read each other's changes. Changes go to one subject
per shard of the serial space (`droneshield.<stream>.sensor.<shard>`), the relay's control
messages (interest, asking for it, resync) to `droneshield.<stream>.control`; the stream keeps
them all for MAX_AGE. Each publish waits for the stream's acknowledgement, so a message the
relay counts as sent is stored. A message whose acknowledgement was lost (the connection broke
after the server stored it) is sent again, under its key as `Nats-Msg-Id`: the stream drops the
copy within its duplicate window, which is MAX_AGE too (an outage the stream replays is one it
deduplicates across).

Each daemon reads the stream through an ephemeral push consumer of its own, starting after the
last message the stream held when the daemon started, and remembers the sequence number of the
last message it handled. When the connection comes back (the server restarted, the network
broke) or its buffer overflowed, it starts a new consumer right after that number and replays
what it missed, so its clients need not reload. Only when the stream no longer holds those
messages (older than MAX_AGE, or the server lost its store) does it report a gap.

A server that lost its store (or an operator who deleted the stream) leaves no stream to publish
to: the daemon whose connection comes back, or whose publish finds no stream, creates it again
as at start and reports a gap. A daemon that finds the stream recreated by another (its
creation time changed) reports a gap too, however far the new stream's sequence has got: its
numbers start again from 1 and say nothing about what this daemon missed. A stream deleted while
a daemon's connection stays up takes the daemon's consumer with it, and nothing tells the
daemon: it would hear nothing more, from any peer, even while its own publishes succeed into a
stream another daemon made again. So a daemon that has received nothing for CONSUMER_CHECK
seconds asks whether its consumer still exists, and starts a new one (a gap) if not.

A consumer filters on one subject (`Names.subjects`), all nats-server 2.9 allows: each daemon
reads every shard of its deployment's stream and keeps the changes its clients watch; the
sender already leaves out heartbeats no peer watches (`interest.py`). Several filter subjects
per consumer (nats-server 2.10) would let a daemon read its clients' shards only; they are not
used, so the relay runs the same on 2.9 (Debian's) and later.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NoReturn
from urllib.parse import parse_qs, urlsplit

import nats
import nats.errors
import nats.js.errors
import trio
import trio_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    StorageType,
    StreamInfo,
)

from ..errors import RelayUnavailable
from . import Message

log = logging.getLogger(__name__)

STREAM_PREFIX: Final = "DRONESHIELD_RELAY_"
NAME_PART: Final = re.compile(r"[A-Za-z0-9_-]+")  # safe as a stream name and a subject token
SHARDS: Final = 64  # subjects the serial space is spread over
PAYLOAD_MAX: Final = 60_000  # bytes per message (NATS's default limit is 1 MiB)
MAX_AGE: Final = 600.0  # seconds the stream keeps a message: the longest outage replayed
MAX_BYTES: Final = 1 << 30  # bytes the stream keeps at most (oldest dropped first)
CONSUMER_IDLE: Final = 30.0  # seconds an abandoned consumer lingers on the server
BUFFER: Final = 10_000  # messages received, not yet handled, before the consumer is restarted
CONNECT_TIMEOUT: Final = 5.0  # seconds
ACK_TIMEOUT: Final = 5.0  # seconds the stream may take to acknowledge a batch of messages
RECONNECT_WAIT: Final = 0.25  # seconds between two reconnection attempts
CLOSE_TIMEOUT: Final = 2.0  # seconds
RETRY_FIRST: Final = 0.1  # seconds
RETRY_MAX: Final = 5.0  # seconds
CONSUMER_CHECK: Final = 10.0  # seconds without a message before asking if the consumer exists

_FAILURES: Final = (nats.errors.Error, OSError, TimeoutError, asyncio.TimeoutError)
_RECONNECTED: Final = object()
_NO_STREAM: Final = object()  # a publish found no stream: the consumer side looks at it
_NO_CONSUMER: Final = object()  # the server no longer has this daemon's consumer


def _servers(url: str) -> str:
    """The servers a relay URL names, without its credentials (for messages)."""
    return ", ".join(part.rpartition("@")[2] for part in url.split(","))


def default_stream(database_url: str) -> str:
    """`DRONESHIELD_RELAY_<database name>`: the daemons of one database share it, and another
    deployment on the same NATS server gets its own unless its database has the same name
    (then `relay_stream` tells them apart). Characters a stream name may not hold become `_`."""
    url = urlsplit(database_url)
    name = url.path.lstrip("/") or parse_qs(url.query).get("dbname", ["postgres"])[0]
    return STREAM_PREFIX + "_".join(NAME_PART.findall(name))


@dataclass(frozen=True)
class Names:
    """A deployment's stream and its subjects."""

    stream: str

    @property
    def subjects(self) -> str:
        """Every subject of the stream (what it stores, and what a daemon reads)."""
        return f"droneshield.{self.stream}.>"

    @property
    def control(self) -> str:
        return f"droneshield.{self.stream}.control"

    def shard(self, shard: int) -> str:
        return f"droneshield.{self.stream}.sensor.{shard}"


class JetStreamBus:
    payload_max: Final = PAYLOAD_MAX
    shards: Final = SHARDS

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        consumer_check: float = CONSUMER_CHECK,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self._url = url
        self.names = Names(stream)
        self._consumer_check = consumer_check
        self._ack_timeout = ack_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._report_no_stream: Callable[[], None] | None = None  # set while serving
        self.replays = 0  # consumers restarted from the last handled message (for tests)
        self.gaps = 0  # times messages were gone from the stream (for tests)

    async def publish(self, messages: Sequence[Message]) -> None:
        js = self._js
        if js is None:
            raise RelayUnavailable("not connected to NATS yet")
        try:
            await trio_asyncio.aio_as_trio(_publish_all)(
                js, self.names, messages, self._ack_timeout
            )
        except _FAILURES as exc:
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                # Nothing stores the subject: the stream is gone (or not back yet). `serve`
                # looks, recreates it if missing and reports the gap; the caller retries.
                report = self._report_no_stream
                if report is not None:
                    report()
            raise RelayUnavailable(f"NATS publish failed: {exc!r}") from exc

    async def serve(
        self,
        deliver: Callable[[str], None],
        gap: Callable[[], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        send, receive = trio.open_memory_channel[Any](BUFFER)
        overflowed = False
        no_stream_reported = False  # _NO_STREAM waits in the channel: once is enough
        nc: Client | None = None

        def hand_over(item: object) -> None:
            nonlocal overflowed
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                overflowed = True

        async def on_reconnected() -> None:
            hand_over(_RECONNECTED)

        def report_no_stream() -> None:
            nonlocal no_stream_reported, overflowed
            if not no_stream_reported:
                try:
                    send.send_nowait(_NO_STREAM)
                    no_stream_reported = True
                except trio.WouldBlock:
                    overflowed = True  # a restart all the same

        first_error: Exception | None = None  # while connecting the first time: said below

        async def on_error(exc: Exception) -> None:
            nonlocal first_error
            if nc is None:
                first_error = exc
            else:
                log.warning("NATS: %r", exc)

        # nats-py retries a first connection forever when told to retry lost ones forever: the
        # daemon would never be ready and never say why. The first gets one timeout.
        with trio.move_on_after(CONNECT_TIMEOUT):
            nc = await trio_asyncio.aio_as_trio(nats.connect)(
                self._url,
                connect_timeout=CONNECT_TIMEOUT,
                reconnect_time_wait=RECONNECT_WAIT,
                max_reconnect_attempts=-1,
                reconnected_cb=on_reconnected,
                error_cb=on_error,
            )
        if nc is None:
            why = "" if first_error is None else f" ({first_error})"
            raise RelayUnavailable(
                f"NATS at {_servers(self._url)} did not answer within {CONNECT_TIMEOUT:g} s{why}"
            )
        try:
            js = nc.jetstream()
            names = self.names
            info = await trio_asyncio.aio_as_trio(_ensure_stream)(js, names)
            last = info.state.last_seq
            created = info.created  # which stream of that name: a recreated one differs
            generation = 0
            sub = await trio_asyncio.aio_as_trio(_subscribe)(
                js, names, last + 1, generation, hand_over
            )
            self._nc, self._js = nc, js
            self._report_no_stream = report_no_stream
            received = 0  # items taken from the channel

            async def check_consumer() -> None:
                """Ask the server about the consumer after CONSUMER_CHECK seconds in which
                nothing arrived (a restart meanwhile makes the answer about an old one)."""
                heard = received
                while True:
                    await trio.sleep(self._consumer_check)
                    if received == heard:
                        asked = generation
                        if await _consumer_gone(sub) and asked == generation:
                            hand_over(_NO_CONSUMER)
                    heard = received

            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(check_consumer)
                while True:
                    item = await receive.receive()
                    received += 1
                    if item is _NO_STREAM:
                        no_stream_reported = False
                    restart = (
                        overflowed
                        or item is _RECONNECTED
                        or item is _NO_STREAM
                        or item is _NO_CONSUMER
                    )
                    if not restart:
                        item_generation, seq, data = item
                        if item_generation != generation or seq <= last:
                            continue  # an earlier consumer's, or a message replayed twice
                        if seq == last + 1:
                            last = seq
                            deliver(data)
                            continue
                        restart = True  # one was skipped (the client dropped it): replay
                    overflowed = False
                    generation += 1
                    sub, last, created = await self._restart(
                        js, sub, last, created, generation, hand_over, gap
                    )
        finally:
            self._nc = self._js = None
            self._report_no_stream = None
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await trio_asyncio.aio_as_trio(nc.close)()
                except asyncio.CancelledError:
                    # The shield holds trio's side only: when the daemon stops, trio-asyncio
                    # cancels what still runs on its loop, this close included (seen about
                    # once in eight stops right after a NATS restart). The loop's sockets
                    # close with it.
                    pass

    async def _restart(
        self,
        js: JetStreamContext,
        sub: Any,
        last: int,
        created: datetime | None,
        generation: int,
        hand_over: Callable[[object], None],
        gap: Callable[[], None],
    ) -> tuple[Any, int, datetime | None]:
        """A new consumer from the message after `last` of the stream created at `created`;
        the old one is dropped. Recreates the stream if it is gone. Retries until the server
        answers. Returns (the subscription, the last sequence now handled, the stream's
        creation time)."""
        delay = RETRY_FIRST
        while True:
            try:
                sub, handled, created, lost = await trio_asyncio.aio_as_trio(_resubscribe)(
                    js, self.names, sub, last, created, generation, hand_over
                )
                break
            except _FAILURES as exc:
                log.warning("NATS consumer not restarted (%r); retrying in %.1f s", exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        self.replays += 1
        if lost:
            self.gaps += 1
            gap()
        return sub, handled, created


async def _consumer_gone(sub: Any) -> bool:
    """Whether the server says `sub`'s consumer (or its stream) no longer exists. A server that
    does not answer says nothing: a lost connection has its own recovery (`_RECONNECTED`)."""
    try:
        await trio_asyncio.aio_as_trio(sub.consumer_info)()
    except nats.js.errors.NotFoundError:
        return True
    except _FAILURES:
        return False
    return False


# asyncio side: everything below runs inside the trio-asyncio loop, called through aio_as_trio.


async def _ensure_stream(js: JetStreamContext, names: Names) -> StreamInfo:
    """The relay's stream, created if missing (daemons starting together, or finding it gone
    together, may both try); one made without the duplicate window keys need gets it."""
    try:
        info = await js.stream_info(names.stream)
    except nats.js.errors.NotFoundError:
        try:
            info = await js.add_stream(
                name=names.stream,
                subjects=[names.subjects],
                storage=StorageType.FILE,
                max_age=MAX_AGE,
                max_bytes=MAX_BYTES,
                duplicate_window=MAX_AGE,
            )
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(names.stream)  # another daemon made it meanwhile
        else:
            log.info("NATS stream %s created", names.stream)
            return info
    return await _widened(js, info)


async def _widened(js: JetStreamContext, info: StreamInfo) -> StreamInfo:
    """`info`'s stream with a duplicate window as long as it keeps messages (at most MAX_AGE),
    if it can be given one: made by an older daemon, or by an operator. Best effort: a server
    or a user that refuses leaves the stream as it was (a retry after a longer outage than its
    window may then reach peers twice), and says so."""
    config = info.config
    window = min(MAX_AGE, config.max_age or MAX_AGE)
    if (config.duplicate_window or 0) >= window:
        return info
    try:
        return await js.update_stream(config, duplicate_window=window)
    except nats.js.errors.APIError as exc:
        log.warning(
            "NATS stream %s keeps its duplicate window of %.0f s (%s): a message sent again "
            "later than that after its first attempt may reach peers twice",
            config.name,
            config.duplicate_window or 0,
            exc,
        )
        return info


async def _publish_all(
    js: JetStreamContext, names: Names, messages: Sequence[Message], ack_timeout: float
) -> None:
    acks = [
        await js.publish_async(
            names.control if shard is None else names.shard(shard),
            payload.encode(),
            headers={Header.MSG_ID: key},
        )
        for shard, payload, key in messages
    ]
    gathered = asyncio.gather(*acks)
    # Cancelled or timed out, the gathering future still finishes with an exception later;
    # fetch it, so asyncio does not log it as never retrieved.
    gathered.add_done_callback(lambda future: future.cancelled() or future.exception())
    await asyncio.wait_for(gathered, ack_timeout)


async def _subscribe(
    js: JetStreamContext,
    names: Names,
    start: int,
    generation: int,
    hand_over: Callable[[object], None],
) -> Any:
    async def on_message(msg: Msg) -> None:
        hand_over((generation, msg.metadata.sequence.stream, msg.data.decode()))

    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=CONSUMER_IDLE,
    )
    return await js.subscribe(
        names.subjects, stream=names.stream, cb=on_message, config=config, manual_ack=True
    )


async def _resubscribe(
    js: JetStreamContext,
    names: Names,
    sub: Any,
    last: int,
    created: datetime | None,
    generation: int,
    hand_over: Callable[[object], None],
) -> tuple[Any, int, datetime | None, bool]:
    """(a consumer from the message after `last`, `last`, `created`, False), or, when the
    stream no longer holds that message or is another stream than the one created at `created`
    (recreated here if missing), (one from the stream's end, its last sequence, its creation
    time, True)."""
    try:
        await sub.unsubscribe()
    except _FAILURES:
        pass  # the old consumer goes away on its own (inactive_threshold)
    info = await _ensure_stream(js, names)
    state = info.state
    lost = False
    if info.created != created:
        # The server lost its store, or the stream was deleted: whoever found it missing made
        # a new one, whose sequence numbers say nothing about ours.
        log.warning(
            "NATS stream %s is new (created %s, ours %s): what followed %d is lost",
            names.stream,
            info.created,
            created,
            last,
        )
        lost = True
    elif state.last_seq < last or (state.first_seq > last + 1 and state.last_seq > last):
        # What we had not read is gone (aged out, or the server lost its store).
        log.warning(
            "NATS stream lost messages after %d (holds %d…%d)",
            last,
            state.first_seq,
            state.last_seq,
        )
        lost = True
    if lost:
        last = state.last_seq
    sub = await _subscribe(js, names, last + 1, generation, hand_over)
    return sub, last, info.created, lost
