"""The emitter's one connection to the daemon, and how failures are told apart.

grpclib connects lazily and opens a new connection on the next call after losing one, so
reconnecting is: wait out the backoff, then call again. Every mode sends through a `Link`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from droneshield.ingest.proto.status import (
    BatchAck,
    DeviceStatus,
    DeviceStatusBatch,
    DeviceStatusServiceStub,
    StatusAck,
)

from .backoff import Backoff

log = logging.getLogger(__name__)

TIMEOUT_DEFAULT: Final = 15.0  # seconds per call; the daemon answers UNAVAILABLE after 10 s
# The daemon is down, overloaded or shutting down: pause everyone, then try again.
BACK_OFF_ON: Final = frozenset(
    {Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.DEADLINE_EXCEEDED}
)
UNREACHABLE: Final = "UNREACHABLE"  # no gRPC status: refused, reset or lost connection

T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """A call that got no answer, or an error status instead of one."""

    code: str  # a gRPC status name, or UNREACHABLE
    message: str
    back_off: bool


def classify(exc: Exception) -> Failure | None:
    """What a call's exception means for the emitter; None for a bug (not a call failure)."""
    if isinstance(exc, GRPCError):
        return Failure(exc.status.name, exc.message or "", exc.status in BACK_OFF_ON)
    if isinstance(exc, TimeoutError):  # grpclib's deadline; a subclass of OSError, so first
        return Failure(Status.DEADLINE_EXCEEDED.name, "no answer in time", True)
    if isinstance(exc, OSError | StreamTerminatedError | ProtocolError):
        return Failure(UNREACHABLE, str(exc) or type(exc).__name__, True)
    return None


def parse_target(target: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) → (host, port).

    Raises:
        ValueError: no port, or not a number.
    """
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"target {target!r} must be HOST:PORT, e.g. 127.0.0.1:50051")
    return host.strip("[]") or "127.0.0.1", int(port)


class Link:
    """A gRPC channel to the daemon plus the backoff every sender shares."""

    def __init__(self, target: str, backoff: Backoff, *, timeout: float = TIMEOUT_DEFAULT):
        self.target = target
        self._backoff = backoff
        self._timeout = timeout
        host, port = parse_target(target)
        self._channel = Channel(host, port)
        self._stub = DeviceStatusServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    async def ready(self) -> None:
        """Return once the current backoff pause (if any) is over."""
        loop = asyncio.get_running_loop()
        # Polling the deadline, not an Event: another failure may extend the pause meanwhile,
        # and a pause ends by time, which an Event would need a timer task for.
        while (pause := self._backoff.ready_at - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(pause)

    async def send_status(self, serial: str, version: str) -> StatusAck | Failure:
        message = DeviceStatus(serial=serial, software_version=version)
        return await self._call(self._stub.send_status, message)

    async def send_batch(self, statuses: Sequence[tuple[str, str]]) -> BatchAck | Failure:
        message = DeviceStatusBatch(
            statuses=[DeviceStatus(serial=s, software_version=v) for s, v in statuses]
        )
        return await self._call(self._stub.send_status_batch, message)

    async def _call(self, method: Callable[..., Awaitable[T]], message: object) -> T | Failure:
        """Wait out any pause, call once; a failure that calls for it starts a new pause.

        Raises:
            Whatever is not a call failure (see `classify`): a bug, to stop the emitter.
        """
        await self.ready()
        generation = self._backoff.generation
        try:
            answer = await method(message, timeout=self._timeout)
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure.back_off:
                self._note_failure(failure, generation)
            return failure
        if self._backoff.succeeded():
            log.info("daemon at %s answering again", self.target)
        return answer

    def _note_failure(self, failure: Failure, generation: int) -> None:
        pause = self._backoff.failed(generation, asyncio.get_running_loop().time())
        if pause is not None:
            log.warning(
                "daemon at %s: %s (%s); backing off %.2f s",
                self.target,
                failure.code,
                failure.message,
                pause,
            )
