"""Writes need `Authorization: Bearer <key>` when an API key is configured; reports
(`POST /reports`) the gRPC token instead, when one is set: a device holds one credential.

A missing key and a wrong one are both 401, told apart by their codes: `missing_api_key` (give
one) and `invalid_api_key` (the one given is not this server's: a client should forget it);
`missing_report_token` and `invalid_report_token` for reports.
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
from ..config import Settings
from .context import settings
from .errors import ClosesConnection
from .expect import proceed
from .openapi import BEARER

P = ParamSpec("P")
R = TypeVar("R")


MISSING: Final = "this endpoint needs Authorization: Bearer <API key>"
WRONG: Final = "the API key is not this server's"
TOKEN_MISSING: Final = "this endpoint needs Authorization: Bearer <report token>"
TOKEN_WRONG: Final = "the report token is not this server's"


class _Unauthorized(ClosesConnection, Unauthorized):
    """Refused before the body is read; `code` is the error body's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, www_authenticate=WWWAuthenticate("bearer"))
        self.code_name = code


def requires_key(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Refuse the request with 401 before its body is read, unless the key matches (or no key
    is configured: then writes are open, as the daemon warns at start)."""
    return _requires(
        view, lambda s: s.api_key, ("missing_api_key", MISSING), ("invalid_api_key", WRONG)
    )


def requires_report_token(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """As `requires_key`, with the token gRPC reports carry (`grpc_token`)."""
    return _requires(
        view,
        lambda s: s.grpc_token,
        ("missing_report_token", TOKEN_MISSING),
        ("invalid_report_token", TOKEN_WRONG),
    )


def _requires(
    view: Callable[P, Awaitable[R]],
    secret: Callable[[Settings], str | None],
    missing: tuple[str, str],
    wrong: tuple[str, str],
) -> Callable[P, Awaitable[R]]:
    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        expected = secret(settings())
        given = request.headers.get("Authorization")
        if expected is not None and not presents(given, expected):
            if given is None or not given.lower().startswith("bearer "):
                raise _Unauthorized(*missing)
            raise _Unauthorized(*wrong)
        await proceed()  # a client waiting for `100 Continue` may now send its body
        return await view(*args, **kwargs)

    return security_scheme([{BEARER: []}])(guarded)
