"""A gRPC call's own deadline, where the writer sees it.

A client sends `grpc-timeout`; grpclib cancels the handler when it passes, but the reports the
handler already queued would keep the daemon's `ack_timeout` and be committed for a caller that
has gone. Under overload that is the work that crowds out callers still waiting: in the soak,
800,000 sensors on two cores, most reports were committed after their callers' deadlines and
acknowledged reports fell to a sixth of what 400,000 sensors got through. With the call's
deadline on each report, the writer answers those it can no longer answer in time instead of
committing them (`Writer._expire`), and spends the commit on reports someone waits for.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from grpclib.server import Stream

from .wrapping import HandlerFunc, Wrapped

if TYPE_CHECKING:
    from grpclib._typing import IServable

# The running call's deadline on the event loop's clock (trio's, inside trio-asyncio); None
# for a call without one. Each grpclib handler runs in a task of its own, so setting it in one
# call never reaches another.
CALL_DEADLINE: ContextVar[float | None] = ContextVar("call_deadline", default=None)


def deadline_known(service: IServable) -> Wrapped:
    """`service`, each call's handler first noting the call's deadline in `CALL_DEADLINE`."""

    def note(func: HandlerFunc) -> HandlerFunc:
        async def noted(stream: Stream[Any, Any]) -> None:
            if stream.deadline is not None:
                now = asyncio.get_running_loop().time()
                CALL_DEADLINE.set(now + stream.deadline.time_remaining())
            await func(stream)

        return noted

    return Wrapped(service, note)
