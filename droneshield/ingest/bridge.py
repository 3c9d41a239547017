"""The asyncio ↔ trio crossing for ingest, and nothing else.

grpclib runs on asyncio (inside `trio_asyncio.open_loop()`); the writer runs on trio. A report
crosses as a `Pending` put on the writer's memory channel with `send_nowait` (a plain function
call, no task switch) and comes back by resolving an asyncio future. Only when the channel is
full does a handler cross properly with `trio_as_aio(send)` and wait: that is backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Final, NoReturn

import trio
import trio_asyncio
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server

from ..admission import Admission, Limits
from ..errors import IngestUnavailable
from ..listeners import AdmittedStream, AdmittingListener
from ..ports import shared_socket
from ..reports import SHUTTING_DOWN, TOO_LATE, Outcome, Pending
from .auth import token_required
from .budgets import Budgets, Connections, Gate, GuardedProtocol, calls_limited
from .codec import StrictCodec
from .deadlines import CALL_DEADLINE, deadline_known
from .limits import size_limited
from .proto.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from .service import Checked, DeviceStatusService

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 2.0  # seconds for grpclib to finish cancelled handlers
STATUS_PROTO: Final = "status.proto"


class _Answers:
    """Collects the outcomes of one call's reports and wakes its handler once, when the last
    arrives: one wake-up per call, not per report (a 1,000-report batch would otherwise cost
    1,000 future callbacks on the asyncio side)."""

    __slots__ = ("_missing", "_wake", "outcomes")

    def __init__(self, wake: Callable[[list[Outcome]], None], count: int) -> None:
        self._wake = wake
        self._missing = count
        self.outcomes: list[Outcome | None] = [None] * count

    def resolver(self, index: int) -> Callable[[Outcome], None]:
        def resolve(outcome: Outcome) -> None:
            self.outcomes[index] = outcome
            self._missing -= 1
            if self._missing == 0:
                # Every slot is filled once none is missing; no None is left.
                self._wake(self.outcomes)  # type: ignore[arg-type]

        return resolve


def _wake_future(future: asyncio.Future[list[Outcome]]) -> Callable[[list[Outcome]], None]:
    def wake(outcomes: list[Outcome]) -> None:
        # The handler may be gone (client deadline, disconnect): its future is cancelled.
        if not future.done():
            future.set_result(outcomes)

    return wake


class Submitter:
    """Hands validated reports from grpclib handlers to the writer's channel."""

    def __init__(self, send: trio.MemorySendChannel[Pending], *, ack_timeout: float) -> None:
        self._send = send
        self._ack_timeout = ack_timeout
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._closed = False

    async def submit(self, reports: Sequence[Checked]) -> list[Outcome]:
        """asyncio side (grpclib's handlers). Resolves once every report is committed or
        failed."""
        if self._closed:
            return [IngestUnavailable(SHUTTING_DOWN)] * len(reports)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        answers = _Answers(_wake_future(future), len(reports))
        self._enter()
        try:
            send_nowait = self._send.send_nowait
            # One loop in this coroutine, not one awaited helper per report: a coroutine per
            # report was a sixth of the batch path's CPU.
            for pending in self._pending(reports, answers):
                try:
                    send_nowait(pending)
                except trio.WouldBlock:
                    await self._wait_for_room(pending)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pending.resolve(IngestUnavailable(SHUTTING_DOWN))
            return await future
        finally:
            self._leave()

    async def submit_from_trio(self, reports: Sequence[Checked]) -> list[Outcome]:
        """trio side (the HTTP edge's `POST /reports`): the same as `submit`, on the same
        queue, deadline and writer; no crossing."""
        if self._closed or not reports:
            return [IngestUnavailable(SHUTTING_DOWN)] * len(reports)
        done = trio.Event()
        answers = _Answers(lambda _: done.set(), len(reports))
        self._enter()
        try:
            for pending in self._pending(reports, answers):
                try:
                    try:
                        self._send.send_nowait(pending)  # no checkpoint per report
                    except trio.WouldBlock:
                        await self._send_by_deadline(pending)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pending.resolve(IngestUnavailable(SHUTTING_DOWN))
            await done.wait()
            return answers.outcomes  # type: ignore[return-value]
        finally:
            self._leave()

    def _pending(self, reports: Sequence[Checked], answers: _Answers) -> Iterator[Pending]:
        deadline = trio.current_time() + self._ack_timeout
        call_deadline = CALL_DEADLINE.get()  # the gRPC call's, when it has one (`deadlines`)
        if call_deadline is not None:
            deadline = min(deadline, call_deadline)
        for index, (serial, version, note) in enumerate(reports):
            yield Pending(serial, version, note, deadline, answers.resolver(index))

    async def _wait_for_room(self, pending: Pending) -> None:
        try:
            await trio_asyncio.trio_as_aio(self._send_by_deadline)(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pending.resolve(IngestUnavailable(SHUTTING_DOWN))

    async def _send_by_deadline(self, pending: Pending) -> None:
        """trio side. A full queue makes the caller wait (backpressure), but not past the
        report's deadline: an overloaded daemon answers UNAVAILABLE, and the client retries."""
        with trio.move_on_at(pending.deadline):
            await self._send.send(pending)
            return
        pending.resolve(IngestUnavailable(TOO_LATE))

    def _enter(self) -> None:
        if self._in_flight == 0:
            self._idle = trio.Event()
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def drain(self) -> None:
        """trio side. Refuse new reports and wait until those in flight are answered."""
        self._closed = True
        await self._idle.wait()


class _GuardedServer(Server):
    """grpclib's Server for connections accepted on the trio side (`listeners`, within the
    admission's limits), with `budgets` on each. grpclib also leaves accepted connections open
    on close (a ResourceWarning and a client that waits for nothing), so this one keeps them to
    close at shutdown."""

    def __init__(
        self, *args: object, budgets: Budgets, connections: Connections, **kwargs: object
    ) -> None:
        # grpclib's Server types each keyword; they are passed on as given.
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.budgets = budgets
        self.connections = connections

    async def serve_accepted(
        self, sock: socket.socket, address: str, tls: ssl.SSLContext | None
    ) -> None:
        """asyncio side: serve an admitted connection from `address` (TLS first, with `tls`);
        its admission is released when it ends, or here if it never starts."""
        served = False

        def serve() -> GuardedProtocol:
            nonlocal served
            served = True
            # grpclib's factory registers the connection's handler; ours adds the budgets.
            plain = self._protocol_factory()
            return GuardedProtocol(plain, self.budgets, self.connections, address)

        handshake = {} if tls is None else {"ssl_handshake_timeout": self.budgets.handshake_timeout}
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: Gate(serve), sock, ssl=tls, **handshake
            )
        except (TimeoutError, OSError):  # a failed TLS handshake, a client gone
            log.debug("gRPC connection from %s not started", address, exc_info=True)
        finally:
            if not served:
                sock.close()
                self.connections.admission.release(address)

    def close(self) -> None:
        """grpclib's `close` without its asyncio server (trio accepts): end every call."""
        for handler in self._handlers:
            handler.close()

    async def wait_closed(self) -> None:
        """grpclib's `wait_closed` without its asyncio server."""
        if self._handlers:
            await asyncio.wait({asyncio.create_task(h.wait_closed()) for h in self._handlers})


async def _listen(host: str, port: int, reuse_port: bool) -> list[trio.SocketListener]:
    """The port's listening sockets; with `reuse_port`, one that other processes (`--workers`)
    listen on too."""
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    sock = trio.socket.from_stdlib_socket(shared_socket(host, port))
    sock.listen(socket.SOMAXCONN)  # as trio's own listeners
    return [trio.SocketListener(sock)]


def _publish_descriptors() -> None:
    """betterproto2 keeps our descriptors in its own pool; reflection reads protobuf's default
    pool (where grpc.health.v1 lives), so copy status.proto there once."""
    default = descriptor_pool.Default()
    try:
        default.FindFileByName(STATUS_PROTO)
    except KeyError:
        proto = FileDescriptorProto()
        default_google_proto_descriptor_pool.FindFileByName(STATUS_PROTO).CopyToProto(proto)
        default.Add(proto)


async def serve_grpc(
    submitter: Submitter,
    host: str,
    port: int,
    *,
    grace: float,
    reuse_port: bool = False,
    tls: ssl.SSLContext | None = None,
    token: str | None = None,
    max_message_bytes: int,
    budgets: Budgets,
    limits: Limits,
    max_health_calls: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve DeviceStatusService, grpc.health.v1 and server reflection until cancelled.

    `task_status.started()` reports the bound port (pass 0 to let the OS pick). With
    `reuse_port`, other processes may listen on the same port (SO_REUSEPORT). With `tls`, only
    TLS is spoken; with `token`, calls other than health checks must carry it (see `auth`).
    A request over `max_message_bytes` gets RESOURCE_EXHAUSTED, one whose message does not
    arrive within `budgets.body_timeout` DEADLINE_EXCEEDED, a malformed one INVALID_ARGUMENT;
    connections are admitted within `limits`, each is held to `budgets`, and at most
    `max_health_calls` health calls (Watch streams stay open) may be open at once.

    Cancellation: new reports get UNAVAILABLE, those in flight get up to `grace` seconds to be
    committed and answered, then remaining calls are cancelled and connections closed.
    """
    service = DeviceStatusService(submitter.submit)
    serving = ServiceStatus()
    health = calls_limited(Health({service: [serving]}), max_health_calls)
    _publish_descriptors()
    services = ServerReflection.extend([service, health])
    if token is not None:
        # Health stays open: load balancers and orchestrators probe it without credentials,
        # and it says only SERVING or not.
        services = [s if s is health else token_required(s, token) for s in services]
    services = [
        size_limited(deadline_known(s), max_message_bytes, budgets.body_timeout) for s in services
    ]
    admission = Admission(limits, "gRPC")
    server = _GuardedServer(
        services, codec=StrictCodec(), budgets=budgets, connections=Connections(admission)
    )
    serve_accepted = trio_asyncio.aio_as_trio(server.serve_accepted)
    listeners = [
        AdmittingListener(inner, admission) for inner in await _listen(host, port, reuse_port)
    ]
    bound = listeners[0].socket.getsockname()[1]

    async def hand_over(stream: AdmittedStream) -> None:
        await serve_accepted(stream.hand_over(), stream.address, tls)

    async with trio.open_nursery() as nursery:
        accepting = trio.CancelScope()

        async def accept() -> None:
            with accepting:
                await trio.serve_listeners(hand_over, listeners, handler_nursery=nursery)

        nursery.start_soon(accept)
        serving.set(True)
        log.info("gRPC listening on %s:%d (%s)", host, bound, "TLS" if tls else "plaintext")
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            accepting.cancel()
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
                serving.set(False)
                with trio.move_on_after(grace):
                    await submitter.drain()
                server.close()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await trio_asyncio.aio_as_trio(server.wait_closed)()
                server.connections.close_all()
    raise AssertionError("unreachable")  # pragma: no cover
