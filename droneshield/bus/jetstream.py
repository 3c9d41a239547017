"""The relay over a NATS JetStream stream, for daemons on many hosts. nats-py runs on asyncio: it
crosses into trio here and nowhere else (`aio_as_trio` calls; its callbacks hand messages to a
trio memory channel, as `db/notify.py` does for asyncpg), inside the daemon's trio-asyncio loop.

Changes go to one subject per shard of the serial space (`droneshield.relay.sensor.<shard>`),
the relay's control messages (interest, asking for it, resync) to `droneshield.relay.control`;
stream RELAY_STREAM keeps them all for MAX_AGE. Each publish waits for the stream's
acknowledgement, so a message the relay counts as sent is stored.

Each daemon reads the stream through an ephemeral push consumer of its own, starting after the
last message the stream held when the daemon started, and remembers the sequence number of the
last message it handled. When the connection comes back (the server restarted, the network
broke) or its buffer overflowed, it starts a new consumer right after that number and replays
what it missed, so its clients need not reload. Only when the stream no longer holds those
messages (older than MAX_AGE, or the server lost its store) does it report a gap.

A consumer filters on one subject (nats-server 2.9 allows no more), so each daemon reads every
shard and keeps the changes its clients watch; the sender already leaves out heartbeats no peer
watches (`interest.py`). With several filter subjects per consumer (nats-server 2.10) a daemon
would subscribe to its clients' shards only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

import nats
import nats.errors
import nats.js.errors
import trio
import trio_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType

from ..errors import RelayUnavailable
from . import Message

log = logging.getLogger(__name__)

RELAY_STREAM: Final = "DRONESHIELD_RELAY"
SUBJECT_PREFIX: Final = "droneshield.relay"
CONTROL_SUBJECT: Final = f"{SUBJECT_PREFIX}.control"
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

_FAILURES: Final = (nats.errors.Error, OSError, TimeoutError, asyncio.TimeoutError)
_RECONNECTED: Final = object()


def shard_subject(shard: int) -> str:
    return f"{SUBJECT_PREFIX}.sensor.{shard}"


class JetStreamBus:
    payload_max: Final = PAYLOAD_MAX
    shards: Final = SHARDS

    def __init__(self, url: str) -> None:
        self._url = url
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.replays = 0  # consumers restarted from the last handled message (for tests)
        self.gaps = 0  # times messages were gone from the stream (for tests)

    async def publish(self, messages: Sequence[Message]) -> None:
        js = self._js
        if js is None:
            raise RelayUnavailable("not connected to NATS yet")
        try:
            await trio_asyncio.aio_as_trio(_publish_all)(js, messages)
        except _FAILURES as exc:
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

        def hand_over(item: object) -> None:
            nonlocal overflowed
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                overflowed = True

        async def on_reconnected() -> None:
            hand_over(_RECONNECTED)

        async def on_error(exc: Exception) -> None:
            log.warning("NATS: %r", exc)

        nc = await trio_asyncio.aio_as_trio(nats.connect)(
            self._url,
            connect_timeout=CONNECT_TIMEOUT,
            reconnect_time_wait=RECONNECT_WAIT,
            max_reconnect_attempts=-1,
            reconnected_cb=on_reconnected,
            error_cb=on_error,
        )
        try:
            js = nc.jetstream()
            await trio_asyncio.aio_as_trio(_ensure_stream)(js)
            info = await trio_asyncio.aio_as_trio(js.stream_info)(RELAY_STREAM)
            last = info.state.last_seq
            generation = 0
            sub = await trio_asyncio.aio_as_trio(_subscribe)(js, last + 1, generation, hand_over)
            self._nc, self._js = nc, js
            task_status.started()
            while True:
                item = await receive.receive()
                restart = item is _RECONNECTED or overflowed
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
                sub, last = await self._restart(js, sub, last, generation, hand_over, gap)
        finally:
            self._nc = self._js = None
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await trio_asyncio.aio_as_trio(nc.close)()

    async def _restart(
        self,
        js: JetStreamContext,
        sub: Any,
        last: int,
        generation: int,
        hand_over: Callable[[object], None],
        gap: Callable[[], None],
    ) -> tuple[Any, int]:
        """A new consumer from the message after `last`; the old one is dropped. Retries until
        the server answers. Returns (the subscription, the last sequence now handled)."""
        delay = RETRY_FIRST
        while True:
            try:
                sub, handled = await trio_asyncio.aio_as_trio(_resubscribe)(
                    js, sub, last, generation, hand_over
                )
                break
            except _FAILURES as exc:
                log.warning("NATS consumer not restarted (%r); retrying in %.1f s", exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        self.replays += 1
        if handled != last:
            self.gaps += 1
            gap()
        return sub, handled


# asyncio side: everything below runs inside the trio-asyncio loop, called through aio_as_trio.


async def _ensure_stream(js: JetStreamContext) -> None:
    """The relay's stream, created if missing (daemons starting together may both try)."""
    try:
        await js.stream_info(RELAY_STREAM)
        return
    except nats.js.errors.NotFoundError:
        pass
    try:
        await js.add_stream(
            name=RELAY_STREAM,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            storage=StorageType.FILE,
            max_age=MAX_AGE,
            max_bytes=MAX_BYTES,
        )
    except nats.js.errors.BadRequestError:
        await js.stream_info(RELAY_STREAM)  # another daemon made it meanwhile


async def _publish_all(js: JetStreamContext, messages: Sequence[Message]) -> None:
    acks = [
        await js.publish_async(
            CONTROL_SUBJECT if shard is None else shard_subject(shard), payload.encode()
        )
        for shard, payload in messages
    ]
    gathered = asyncio.gather(*acks)
    # Cancelled or timed out, the gathering future still finishes with an exception later;
    # fetch it, so asyncio does not log it as never retrieved.
    gathered.add_done_callback(lambda future: future.cancelled() or future.exception())
    await asyncio.wait_for(gathered, ACK_TIMEOUT)


async def _subscribe(
    js: JetStreamContext, start: int, generation: int, hand_over: Callable[[object], None]
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
        f"{SUBJECT_PREFIX}.>", stream=RELAY_STREAM, cb=on_message, config=config, manual_ack=True
    )


async def _resubscribe(
    js: JetStreamContext,
    sub: Any,
    last: int,
    generation: int,
    hand_over: Callable[[object], None],
) -> tuple[Any, int]:
    """(a consumer from the message after `last`, `last`), or, when the stream no longer holds
    that message, (one from the stream's end, its last sequence)."""
    try:
        await sub.unsubscribe()
    except _FAILURES:
        pass  # the old consumer goes away on its own (inactive_threshold)
    state = (await js.stream_info(RELAY_STREAM)).state
    if state.last_seq < last or (state.first_seq > last + 1 and state.last_seq > last):
        # What we had not read is gone (aged out, or the server lost its store).
        log.warning(
            "NATS stream lost messages after %d (holds %d…%d)",
            last,
            state.first_seq,
            state.last_seq,
        )
        last = state.last_seq
    sub = await _subscribe(js, last + 1, generation, hand_over)
    return sub, last
