"""An exchange of in-memory buses, for the relay's peer protocol on MockClock: what any bus on
it publishes reaches every bus on it (the publisher's own included), in order, as NOTIFY does.
The same protocol over real buses is in test_relay.py and test_relay_nats.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NoReturn

import orjson
import trio

from droneshield.bus import Message


class Exchange:
    def __init__(self) -> None:
        self._inboxes: list[trio.MemorySendChannel[str]] = []
        self.published: list[dict] = []  # every message, decoded, in the order sent
        self.muted: set[str] = set()  # instances whose messages are lost on the way

    def bus(self) -> MemoryBus:
        return MemoryBus(self)

    def changes(self) -> list[str]:
        """The serials of every change relayed so far."""
        return [row[1] for message in self.published for row in message.get("c", ())]

    def _publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            decoded = orjson.loads(message.payload)
            if decoded["i"] in self.muted:
                continue
            self.published.append(decoded)
            for inbox in self._inboxes:
                inbox.send_nowait(message.payload)


class MemoryBus:
    payload_max = 8000
    shards = 1

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self.deaf = False  # while set, what reaches this bus is lost (its receiving side is down)

    async def publish(self, messages: Sequence[Message]) -> None:
        self._exchange._publish(messages)
        await trio.lowlevel.checkpoint()

    async def serve(
        self,
        deliver: Callable[[str], None],
        gap: Callable[[], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        send, receive = trio.open_memory_channel[str](math.inf)
        self._exchange._inboxes.append(send)
        try:
            task_status.started()
            async for payload in receive:
                if not self.deaf:
                    deliver(payload)
        finally:
            self._exchange._inboxes.remove(send)
        raise AssertionError("unreachable")
