"""Bearer credentials, shared by the HTTP API key and the gRPC token so both compare alike."""

from __future__ import annotations

import hmac


def presents(header: str | None, secret: str) -> bool:
    """Whether an `Authorization` value is `Bearer <secret>` (scheme case-insensitive).

    Constant-time in the token, so response timing does not reveal how much of a guess was
    right.
    """
    scheme, _, token = (header or "").partition(" ")
    given = token.strip().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given, secret.encode())
