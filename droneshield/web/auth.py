"""Writes need `Authorization: Bearer <key>` when an API key is configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from quart import request
from quart_schema import security_scheme
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from ..bearer import presents
from ..config import Settings
from .context import settings
from .errors import ClosesConnection
from .openapi import BEARER

P = ParamSpec("P")
R = TypeVar("R")


class _Unauthorized(ClosesConnection, Unauthorized):
    """Refused before the body is read."""


def requires_key(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Refuse the request with 401 before its body is read, unless the key matches (or no key
    is configured: then writes are open, as the daemon warns at start)."""
    return _requires(view, lambda s: s.api_key, "API key")


def requires_report_token(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """As `requires_key`, with the token gRPC reports carry (`grpc_token`): a device holds one
    credential whichever way it reports."""
    return _requires(view, lambda s: s.grpc_token, "report token")


def _requires(
    view: Callable[P, Awaitable[R]], secret: Callable[[Settings], str | None], what: str
) -> Callable[P, Awaitable[R]]:
    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        expected = secret(settings())
        if expected is not None and not presents(request.headers.get("Authorization"), expected):
            raise _Unauthorized(
                f"this endpoint needs Authorization: Bearer <{what}>",
                www_authenticate=WWWAuthenticate("bearer"),
            )
        return await view(*args, **kwargs)

    return security_scheme([{BEARER: []}])(guarded)
