"""The emitter's one connection to the daemon, and how failures are told apart.

grpclib connects lazily and opens a new connection on the next call after losing one, so
reconnecting is: wait out the backoff, then call again. Every mode sends through a `Link`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from grpclib import GRPCError, Status
from grpclib.client import Channel, UnaryUnaryMethod
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from droneshield.ingest.wire import BatchAck, DeviceStatus, DeviceStatusBatch, StatusAck

from .backoff import Backoff

log = logging.getLogger(__name__)

TIMEOUT_DEFAULT: Final = 15.0  # seconds per call; the daemon answers UNAVAILABLE after 10 s
# The daemon is down, overloaded or shutting down: pause everyone, then try again.
BACK_OFF_ON: Final = frozenset(
    {Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.DEADLINE_EXCEEDED}
)
UNREACHABLE: Final = "UNREACHABLE"  # no gRPC status: refused, reset or lost connection
SERVICE: Final = "/status.DeviceStatusService"
# grpclib 0.4 raises this AssertionError, not StreamTerminatedError, when a connection ends
# in the middle of an answer's message (the daemon closed it: shutdown, a GOAWAY).
_SHORT_READ: Final = "Received less data than expected"

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
    if isinstance(exc, AssertionError) and str(exc) == _SHORT_READ:
        return Failure(UNREACHABLE, "connection lost in the middle of an answer", True)
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


def client_tls(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext | None:
    """TLS trusting `ca_file` (None: plaintext), presenting `cert_file`/`key_file` to a daemon
    that requires client certificates.

    Raises:
        ValueError: a client certificate without a CA to verify the daemon with.
        OSError, ssl.SSLError: a file is missing or is not PEM.
    """
    if ca_file is None:
        if cert_file is not None:
            raise ValueError("--cert-file needs --ca-file (client certificates go over TLS)")
        return None
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])  # gRPC is HTTP/2 only
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class Link:
    """A gRPC channel to the daemon plus the backoff every sender shares. While the daemon is
    down, one call per backoff pause tries to reach it (a probe); the rest wait for its answer,
    so a fleet of thousands reconnects with one connection attempt, not thousands."""

    def __init__(
        self,
        target: str,
        backoff: Backoff,
        *,
        timeout: float = TIMEOUT_DEFAULT,
        tls: ssl.SSLContext | None = None,
        token: str | None = None,
    ):
        self.target = target
        self._backoff = backoff
        self._timeout = timeout
        # Built once: every call sends the same bearer token as `authorization` metadata.
        self._metadata = {"authorization": f"Bearer {token}"} if token else None
        host, port = parse_target(target)
        self._channel = Channel(host, port, ssl=tls)
        # protobuf's C codec (the classes the daemon decodes with), not betterproto2's pure
        # Python: encoding a 1,000-report batch took ~18 ms of the emitter's CPU, enough for a
        # fleet-scale emitter to take a core from the daemon it shares a machine with.
        self._send_status = UnaryUnaryMethod(
            self._channel, f"{SERVICE}/SendStatus", DeviceStatus, StatusAck
        )
        self._send_batch = UnaryUnaryMethod(
            self._channel, f"{SERVICE}/SendStatusBatch", DeviceStatusBatch, BatchAck
        )
        self._probe: asyncio.Event | None = None

    def close(self) -> None:
        self._channel.close()

    async def ready(self) -> None:
        """Return once sending may go on: the backoff pause is over and no probe (the one call
        that goes first after a failure) is still waiting for its answer."""
        loop = asyncio.get_running_loop()
        while True:
            if (pause := self._backoff.ready_at - loop.time()) > 0:
                await asyncio.sleep(pause)
            elif self._probe is not None:
                await self._probe.wait()
            else:
                return

    async def send_status(self, serial: str, version: str) -> StatusAck | Failure:
        message = DeviceStatus(serial=serial, software_version=version)
        return await self._call(self._send_status, message)

    async def send_batch(self, statuses: Sequence[tuple[str, str]]) -> BatchAck | Failure:
        message = DeviceStatusBatch(
            statuses=[DeviceStatus(serial=s, software_version=v) for s, v in statuses]
        )
        return await self._call(self._send_batch, message)

    async def _call(self, method: Callable[..., Awaitable[T]], message: object) -> T | Failure:
        """Wait out any pause, call once; a failure that calls for it starts a new pause.

        Raises:
            Whatever is not a call failure (see `classify`): a bug, to stop the emitter.
        """
        await self.ready()
        probe = None
        if self._backoff.attempt > 0:  # after a failure one call tries, the others wait for it
            probe = self._probe = asyncio.Event()
        generation = self._backoff.generation
        try:
            answer = await self._answer(method, message)
            if isinstance(answer, Failure) and answer.back_off:
                self._note_failure(answer, generation)
            elif self._backoff.succeeded():  # any answer means the daemon is reachable again
                log.info("daemon at %s answering again", self.target)
            return answer
        finally:
            if probe is not None:
                self._probe = None
                probe.set()

    async def _answer(self, method: Callable[..., Awaitable[T]], message: object) -> T | Failure:
        try:
            return await method(message, timeout=self._timeout, metadata=self._metadata)
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            return failure

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
