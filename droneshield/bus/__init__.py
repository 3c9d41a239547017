"""The transports the relay can run on, behind one small interface (`Bus`).

- `notify.py`: PostgreSQL NOTIFY/LISTEN on one channel (the default: nothing to run besides
  the database, which the embedded set-up already has).
- `jetstream.py`: a NATS JetStream stream (`DRONESHIELD_RELAY_URL=nats://…`), for daemons on
  many hosts: messages are kept in the stream, so a daemon that lost its connection replays what
  it missed instead of making its clients reload.

A bus carries opaque text messages; what they mean is the relay's business (`relay.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn, Protocol

import trio


class Message(NamedTuple):
    """What the relay hands a bus: text for a subject, under a key (see `key`)."""

    shard: int | None  # of the serial space its changes belong to; None: the relay's own
    payload: str
    key: str
    """Unique to this message and the same on every attempt to send it: a bus that may store an
    attempt whose acknowledgement was lost (JetStream) drops the retry's copy by it."""


class Bus(Protocol):
    @property
    def payload_max(self) -> int:
        """Bytes per message."""
        ...

    @property
    def shards(self) -> int:
        """Subjects changes are spread over (1: a single channel)."""
        ...

    async def publish(self, messages: Sequence[Message]) -> None:
        """Send `messages`, in order, to every daemon on the bus (ourselves included).

        Raises:
            RelayUnavailable: not (all) sent; sending the same messages (keys) again later is
                harmless.
        """
        ...

    async def serve(
        self,
        deliver: Callable[[str], None],
        gap: Callable[[], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Receive until cancelled: `deliver` each message in order; call `gap` whenever
        messages may have been lost for good. `started()` once receiving.

        Raises:
            OSError, RelayUnavailable or the server's errors: the first connection failed (later
            losses are retried with backoff).
        """
        ...
