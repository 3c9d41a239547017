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

    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        key = settings().api_key
        if key is not None and not presents(request.headers.get("Authorization"), key):
            raise _Unauthorized(
                "this endpoint needs Authorization: Bearer <API key>",
                www_authenticate=WWWAuthenticate("bearer"),
            )
        return await view(*args, **kwargs)

    return security_scheme([{BEARER: []}])(guarded)
