"""What one client may cost the gRPC server: per-connection budgets, enforced on HTTP/2 frames.

grpclib (over h2) accepts whatever a peer sends: a client that opens a stream and resets it at
once, over and over (CVE-2023-44487, "rapid reset"), makes the server start and cancel a handler
per stream while it never holds more than one open, and floods of PING or SETTINGS frames make
it answer each. Memory grows for good and the event loop the whole daemon shares is kept busy.

The budgets follow what Go's net/http2, nginx and h2o shipped: frames a client may send per window
(stream resets, PINGs, SETTINGS); beyond, the connection gets GOAWAY ENHANCE_YOUR_CALM and is
closed, so a flood costs the attacker a new TCP and HTTP/2 handshake every few hundred frames. A
reset stream no longer counts against h2's SETTINGS_MAX_CONCURRENT_STREAMS, but its handler runs
until grpclib has cancelled it, and thousands of HEADERS+RST_STREAM pairs fit in one read: a client
with `max_streams` reset calls whose handlers are still being cancelled is sent away, as nginx
does. Calls that ended normally are not counted: a client that honours the limit opens its next
call as soon as it reads an answer, while the handler that sent it may still be releasing its
stream (on a busy loop, for a while), and it must not be sent away for that. A connection that
never completes its HTTP/2 preface, or has no call open for `idle_timeout`, is closed. The
defaults are far above what a real fleet's clients send (grpclib and grpcio send a handful of
SETTINGS and no unsolicited PINGs unless keepalive is configured; a reset is a cancelled call).

Which connections are served at all (caps per port and per address, a connection rate, a pause
for an address that broke a budget) is `admission`'s, asked as trio accepts them (`listeners`),
before asyncio and HTTP/2 see them.

Time is the event loop's: inside trio-asyncio, asyncio's `loop.time()` is trio's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from grpclib import GRPCError, Status
from grpclib.metadata import decode_timeout
from grpclib.protocol import H2Protocol
from grpclib.server import Stream
from h2.errors import ErrorCodes
from h2.events import (
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from ..admission import Admission, Limits
from .corking import CorkedTransport
from .wrapping import HandlerFunc, Wrapped

if TYPE_CHECKING:
    from grpclib._typing import IServable

    from ..config import Settings

log = logging.getLogger(__name__)

FEED_SLICE: Final = 4 * 1024  # bytes handed to h2 at a time
MIN_DEADLINE: Final = 0.001  # seconds: a shorter grpc-timeout has passed before a handler runs


@dataclass(frozen=True)
class Budgets:
    """The limits, from `Settings` (README, Security)."""

    max_streams: int
    max_resets: int  # stream resets by the client per window
    max_pings: int  # PING frames per window
    max_settings: int  # SETTINGS frames per window
    window: float  # seconds
    idle_timeout: float  # seconds without an open call
    handshake_timeout: float  # seconds to complete the HTTP/2 preface
    body_timeout: float  # seconds a request's message may take to arrive (`limits`)


def grpc_budgets(settings: Settings) -> Budgets:
    return Budgets(
        max_streams=settings.grpc_max_streams,
        max_resets=settings.grpc_max_resets,
        max_pings=settings.grpc_max_pings,
        max_settings=settings.grpc_max_settings,
        window=settings.grpc_budget_window,
        idle_timeout=settings.grpc_idle_timeout,
        handshake_timeout=settings.grpc_handshake_timeout,
        body_timeout=settings.body_timeout,
    )


def grpc_limits(settings: Settings) -> Limits:
    return Limits(
        max_connections=settings.grpc_max_connections,
        per_address=settings.grpc_max_connections_per_address,
        rate=settings.grpc_connection_rate_per_address,
        penalty=settings.grpc_budget_penalty,
    )


class Allowance:
    """At most `limit` spendings per `window` seconds (a fixed window: cheap, and a burst of
    twice the limit across a window's edge is still bounded)."""

    __slots__ = ("_limit", "_spent", "_start", "_window")

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._start = float("-inf")
        self._spent = 0

    def spend(self, now: float) -> bool:
        """Count one; False once the window's allowance is used up."""
        if now - self._start >= self._window:
            self._start = now
            self._spent = 0
        self._spent += 1
        return self._spent <= self._limit


def deadline_problem(headers: Iterable[tuple[str, str]]) -> tuple[Status, str] | None:
    """What is wrong with a call's `grpc-timeout`, if anything. grpclib answers an invalid one,
    or one that expires before the handler starts, UNKNOWN with a logged traceback."""
    for name, value in headers:
        if name != "grpc-timeout":
            continue
        try:
            timeout = decode_timeout(value)
        except ValueError:
            return Status.INVALID_ARGUMENT, "invalid grpc-timeout header"
        if timeout < MIN_DEADLINE:
            return Status.DEADLINE_EXCEEDED, "deadline exceeded before the call started"
    return None


class Gate(asyncio.Protocol):
    """What asyncio starts for a connection `listeners` admitted: `serve`'s protocol (grpclib's,
    with the budgets) is made once the connection is, after its TLS handshake, so a failed
    handshake leaves no grpclib handler behind."""

    def __init__(self, serve: Callable[[], GuardedProtocol]) -> None:
        self._serve = serve

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        protocol = self._serve()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class Connections:
    """The server's admitted connections: counted by `admission`, closed together at shutdown."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.open: set[GuardedProtocol] = set()

    def close_all(self) -> None:
        for protocol in list(self.open):
            protocol.close()


class GuardedProtocol(H2Protocol):
    """grpclib's protocol for one connection, with the budgets applied to the frames it receives.

    Also announces SETTINGS_MAX_CONCURRENT_STREAMS (grpclib leaves h2's default): clients that
    honour it (grpclib, grpcio) queue further calls; h2 ends a connection that opens more.
    """

    def __init__(
        self, plain: H2Protocol, budgets: Budgets, connections: Connections, address: str
    ) -> None:
        super().__init__(plain.handler, plain.config, plain.h2_config)
        self._budgets = budgets
        self._connections = connections
        self._admission = connections.admission
        self._address = address
        self._resets = Allowance(budgets.max_resets, budgets.window)
        self._pings = Allowance(budgets.max_pings, budgets.window)
        self._settings = Allowance(budgets.max_settings, budgets.window)
        self._preface_seen = False
        self._cancelling: set[int] = set()  # calls the client reset, handlers not yet ended
        self._last_call = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        # A TCP (or TLS) server's transport; grpclib writes to it through the cork.
        corked = CorkedTransport(cast(asyncio.Transport, transport), loop)
        self._transport = cast(asyncio.Transport, corked)
        self._connections.open.add(self)
        super().connection_made(self._transport)
        self.connection._connection.update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: self._budgets.max_streams}
        )
        self.connection.flush()
        self._last_call = loop.time()
        self._timer = loop.call_later(self._budgets.handshake_timeout, self._check_handshake)

    def data_received(self, data: bytes) -> None:
        # In slices: h2 parses all it is fed before a budget can be checked, and one read
        # (256 KiB) holds ~8,000 stream resets, ~80 ms of the event loop every task shares.
        view = memoryview(data)
        for start in range(0, len(data), FEED_SLICE):
            if not self._feed(view[start : start + FEED_SLICE]):
                return

    def _feed(self, data: memoryview) -> bool:
        """grpclib's `data_received` with the budgets; False once the connection is closing."""
        try:
            # grpclib annotates bytes; h2 parses any buffer, and a slice of the read is not copied.
            events = self.connection.feed(data)  # type: ignore[arg-type]
        except ProtocolError:
            log.debug("HTTP/2 protocol error from a gRPC client", exc_info=True)
            self.processor.close("Protocol error")
            return False
        self.connection.flush()
        # A call reset in the same read as it was opened is never started: no handler task
        # to create and cancel, the bulk of what a rapid reset costs grpclib.
        reset = {e.stream_id for e in events if isinstance(e, StreamReset) and e.remote_reset}
        for event in events:
            spent = self._budget_spent(event)
            if spent is not None:
                self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, spent)
                return False
            if isinstance(event, RequestReceived):
                if self._resets_outrun_handlers():
                    self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "streams reset faster than they end")
                    return False
                if event.stream_id in reset or self._refused(event):
                    continue
            elif (
                isinstance(event, StreamReset)
                and event.remote_reset
                and event.stream_id in self.processor.streams
            ):
                self._cancelling.add(event.stream_id)
            self.processor.process(event)
        self.connection.flush()
        return not self.connection.is_closing()

    def _resets_outrun_handlers(self) -> bool:
        """Whether `max_streams` reset calls still have handlers running (h2 already bounds the
        calls that are open)."""
        if len(self._cancelling) < self._budgets.max_streams:
            return False
        self._cancelling.intersection_update(self.processor.streams)
        return len(self._cancelling) >= self._budgets.max_streams

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._connections.open.discard(self)
        self._admission.release(self._address)
        super().connection_lost(exc)

    def close(self) -> None:
        """Close the transport (grpclib then sees connection_lost and ends its streams)."""
        if self._transport is not None:
            self._transport.close()

    def _budget_spent(self, event: Event) -> str | None:
        """The budget `event` exceeds, if any."""
        now = asyncio.get_running_loop().time()
        if isinstance(event, RemoteSettingsChanged):
            self._preface_seen = True
            return None if self._settings.spend(now) else "SETTINGS flood"
        if isinstance(event, PingReceived):
            return None if self._pings.spend(now) else "PING flood"
        if isinstance(event, StreamReset) and event.remote_reset:
            return None if self._resets.spend(now) else "stream reset flood"
        if isinstance(event, RequestReceived):
            self._last_call = now
        return None

    def _refused(self, event: RequestReceived) -> bool:
        """Answer a call whose deadline is invalid or already past, without starting it."""
        # h2 annotates headers as bytes or str; grpclib's h2 configuration decodes them to str.
        problem = deadline_problem(event.headers)  # type: ignore[arg-type]
        if problem is None:
            return False
        status, message = problem
        h2 = self.connection._connection
        h2.send_headers(
            event.stream_id,
            [
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", str(status.value)),
                ("grpc-message", message),
            ],
            end_stream=True,
        )
        return True

    def _goaway(self, code: ErrorCodes, reason: str | None = None) -> None:
        """Tell the client to go (for `reason`, a budget it exceeded: its address is then
        penalised) and close."""
        if reason is not None:
            now = asyncio.get_running_loop().time()
            self._admission.count(reason, now)
            self._admission.penalise(self._address, now)
        h2 = self.connection._connection
        h2.close_connection(error_code=code)
        self.connection.flush()
        self.close()

    def _check_handshake(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._preface_seen:
            self._admission.count("no HTTP/2 preface", loop.time())
            self.close()
            return
        self._timer = loop.call_later(self._budgets.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.processor.streams:
            self._last_call = now
        idle_for = now - self._last_call
        if idle_for >= self._budgets.idle_timeout:
            self._goaway(ErrorCodes.NO_ERROR)
            return
        self._timer = loop.call_later(self._budgets.idle_timeout - idle_for, self._check_idle)


def calls_limited(service: IServable, limit: int) -> Wrapped:
    """`service`, with at most `limit` of its calls open at once across all connections
    (RESOURCE_EXHAUSTED beyond). For health: a `Watch` stays open for as long as the client
    likes, and each costs ~10 KB."""
    open_calls = 0

    def bound(func: HandlerFunc) -> HandlerFunc:
        async def bounded(stream: Stream[Any, Any]) -> None:
            nonlocal open_calls
            if open_calls >= limit:
                raise GRPCError(Status.RESOURCE_EXHAUSTED, f"at most {limit} calls open at once")
            open_calls += 1
            try:
                await func(stream)
            finally:
                open_calls -= 1

        return bounded

    return Wrapped(service, bound)
