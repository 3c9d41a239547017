"""Writes need `Authorization: Bearer <key>` when an API key is configured.

A missing key and a wrong one are both 401, told apart by their codes: `missing_api_key` (give
one) and `invalid_api_key` (the one given is not this server's: a client should forget it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Final, ParamSpec, TypeVar

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


MISSING: Final = "this endpoint needs Authorization: Bearer <API key>"
WRONG: Final = "the API key is not this server's"


class _Unauthorized(ClosesConnection, Unauthorized):
    """Refused before the body is read; `code` is the error body's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, www_authenticate=WWWAuthenticate("bearer"))
        self.code_name = code


def requires_key(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Refuse the request with 401 before its body is read, unless the key matches (or no key
    is configured: then writes are open, as the daemon warns at start)."""

    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        key = settings().api_key
        given = request.headers.get("Authorization")
        if key is not None and not presents(given, key):
            if given is None or not given.lower().startswith("bearer "):
                raise _Unauthorized("missing_api_key", MISSING)
            raise _Unauthorized("invalid_api_key", WRONG)
        return await view(*args, **kwargs)

    return security_scheme([{BEARER: []}])(guarded)
