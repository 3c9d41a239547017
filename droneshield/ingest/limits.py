"""A size limit on gRPC requests that holds before the bytes arrive, and a time limit on the rest.

grpclib reads a message's declared length in full before any codec sees it, and keeps opening
the HTTP/2 flow-control window while it reads: a client announcing 4 GiB would make the daemon
buffer that much, on every stream it opens. Here each method's stream reads the 5-byte length
prefix itself and refuses a length over the limit with RESOURCE_EXHAUSTED before reading on.

What is under the limit is buffered as it arrives, and grpclib waits for the rest for as long as
the call stays open (an open call also keeps its connection from being idle): a client that
sends all but the last byte of a 4 MB message on each of its streams would hold 4 MB a stream
for good. So the rest of a message, once its prefix has arrived, gets `body_timeout` seconds
(HTTP's setting for a request body), or less when the call's own deadline comes first (grpclib
ends the call then); past it the call is answered DEADLINE_EXCEEDED, grpclib resets the stream
and what arrived is dropped with it. A message that arrived with its prefix is read without the
timer.

`_recv_message` is grpclib's `Stream.recv_message` (grpclib 0.4.9, pinned in pyproject) with
those checks added; it uses the same private attributes grpclib's own method does.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from grpclib import GRPCError, Status
from grpclib.server import Stream

from .. import human
from .batch_count import check_batch_count
from .service import BATCH_MAX
from .wire import DeviceStatusBatch
from .wrapping import HandlerFunc, Wrapped

if TYPE_CHECKING:
    from grpclib._typing import IServable

_PREFIX = 5  # bytes: compressed flag, then the message length (big-endian uint32)


def size_limited(service: IServable, max_bytes: int, body_timeout: float) -> Wrapped:
    """`service`, each method refusing requests over `max_bytes` from their length prefix, and
    those whose message has not arrived `body_timeout` seconds after its prefix."""

    def limit(func: HandlerFunc) -> HandlerFunc:
        async def limited(stream: Stream[Any, Any]) -> None:
            # grpclib has no hook before it reads a message: the stream's reader is replaced.
            stream.recv_message = partial(_recv_message, stream, max_bytes, body_timeout)  # type: ignore[method-assign]
            try:
                await func(stream)
            finally:
                # The partial holds the stream that holds it: a reference cycle that kept each
                # call's stream, HTTP/2 buffers, queues and events (26 objects) for the
                # collector, whose young passes then took 7 to 27 ms on a loaded machine.
                # Dropping it lets reference counting free them when the call ends.
                del stream.recv_message

        return limited

    return Wrapped(service, limit)


async def _recv_message(stream: Stream[Any, Any], max_bytes: int, body_timeout: float) -> Any:
    """Raises:
    GRPCError: RESOURCE_EXHAUSTED for a message over `max_bytes` (nothing more is read),
        DEADLINE_EXCEEDED for one that has not arrived `body_timeout` seconds after its prefix,
        UNIMPLEMENTED for a compressed one, INVALID_ARGUMENT for a request that ends before
        its message does or, on a method taking one message, carries none.
    """
    h2_stream = stream._stream
    prefix = await _recv_exactly(stream, _PREFIX)
    if not prefix:
        if stream._messages_received == 0 and not stream._cardinality.client_streaming:
            raise GRPCError(Status.INVALID_ARGUMENT, "the request carries no message")
        return None
    length = int.from_bytes(prefix[1:_PREFIX], "big")
    if prefix[0]:
        raise GRPCError(Status.UNIMPLEMENTED, "compressed requests are not supported")
    if length > max_bytes:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"request of {human.size(length)} exceeds the limit of {human.size(max_bytes)}",
        )
    if h2_stream.buffer._acked_size >= length:
        # It came with its prefix (a unary call's one DATA frame): nothing to wait for, so no
        # timer (arming and cancelling one was ~15 µs, 5 % of a unary call's CPU).
        data = await _recv_exactly(stream, length)
    else:
        try:
            async with asyncio.timeout(body_timeout):
                data = await _recv_exactly(stream, length)
        except TimeoutError:
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"the request's message did not arrive within {human.duration(body_timeout)}",
            ) from None
    if len(data) != length:
        raise GRPCError(Status.INVALID_ARGUMENT, "the request ends inside a message")
    if stream._recv_type is DeviceStatusBatch:
        check_batch_count(data, BATCH_MAX)
    (message,) = await stream._dispatch.recv_message(stream._codec.decode(data, stream._recv_type))
    stream._messages_received += 1
    h2_stream.connection.messages_received += 1
    h2_stream.connection.last_message_received = time.monotonic()
    return message


async def _recv_exactly(stream: Stream[Any, Any], size: int) -> bytes:
    """`size` bytes of the request, or fewer at its end.

    Raises:
        GRPCError: INVALID_ARGUMENT when the request ends within them (grpclib's buffer says
            so with an AssertionError, which it would answer UNKNOWN).
    """
    try:
        return await stream._stream.recv_data(size)
    except AssertionError:
        raise GRPCError(Status.INVALID_ARGUMENT, "the request ends inside a message") from None
