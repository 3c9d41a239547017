"""The gRPC bearer token: `authorization: Bearer <token>` metadata on every call.

Checked once per call, when grpclib has read the call's headers and before it reads the request
message (its `RecvRequest` event): a refused caller costs no parsing, and a batch of 1,000
reports costs one comparison, like a single report.
"""

from __future__ import annotations

from typing import Final

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from grpclib.server import Server

from ..bearer import presents

# Health stays open: load balancers and orchestrators probe it without credentials, and it says
# only SERVING or not. Everything else (reports, reflection) needs the token.
OPEN_PREFIXES: Final = ("/grpc.health.v1.Health/",)
MISSING: Final = "this call needs metadata `authorization: Bearer <token>`"
WRONG: Final = "the bearer token in `authorization` is not valid"


def require_token(server: Server, token: str) -> None:
    """Answer UNAUTHENTICATED to any call on `server` (health checks aside) that does not
    carry `token`."""

    async def check(event: RecvRequest) -> None:
        if event.method_name.startswith(OPEN_PREFIXES):
            return
        header = event.metadata.get("authorization")
        if header is None:
            raise GRPCError(Status.UNAUTHENTICATED, MISSING)
        if not presents(str(header), token):
            raise GRPCError(Status.UNAUTHENTICATED, WRONG)

    listen(server, RecvRequest, check)
