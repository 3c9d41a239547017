"""The gRPC bearer token: `authorization: Bearer <token>` metadata on every call.

Checked once per call, when grpclib has read the call's headers and before the handler reads
the request message: a refused caller costs no parsing, and a batch of 1,000 reports costs one
comparison, like a single report. The check wraps each method's handler rather than listening
to grpclib's `RecvRequest` event, which builds an event object per call: measured here, the
event costs ~20 µs a call, the wrapper ~3.5 µs (a unary call costs ~1 ms in all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from grpclib import GRPCError, Status
from grpclib.server import Stream

from ..bearer import presents
from .wrapping import HandlerFunc, Wrapped

if TYPE_CHECKING:
    from grpclib._typing import IServable  # the protocol grpclib's Server takes

MISSING: Final = "this call needs metadata `authorization: Bearer <token>`"
WRONG: Final = "the bearer token in `authorization` is not valid"


def _check(metadata: Mapping[str, Any] | None, token: str) -> None:
    """Raises:
    GRPCError: UNAUTHENTICATED, saying whether the token is missing or wrong.
    """
    header = (metadata or {}).get("authorization")
    if header is None:
        raise GRPCError(Status.UNAUTHENTICATED, MISSING)
    if not presents(str(header), token):
        raise GRPCError(Status.UNAUTHENTICATED, WRONG)


def token_required(service: IServable, token: str) -> Wrapped:
    """`service`, each method answering UNAUTHENTICATED unless the call carries `token`."""

    def guard(func: HandlerFunc) -> HandlerFunc:
        async def guarded(stream: Stream[Any, Any]) -> None:
            _check(stream.metadata, token)
            await func(stream)

        return guarded

    return Wrapped(service, guard)
