"""Every HTTP error is `{"error": {"code", "message"}}` with the right status: the one place
where domain errors (errors.py) become HTTP statuses."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import asyncpg
from quart import Quart, Response, g, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..db.pool import is_transient
from ..errors import (
    BadRelease,
    Conflict,
    DatabaseUnavailable,
    DroneshieldError,
    Invalid,
    InvalidSensors,
    LengthRequired,
    NotFound,
    StorageFull,
    TimedOut,
    TooLarge,
    Unavailable,
    UnsupportedContent,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)

# The most specific kind an error is an instance of decides (as httpx's map_exceptions does).
STATUS_OF: Final[dict[type[DroneshieldError], int]] = {
    Invalid: 400,
    NotFound: 404,
    TimedOut: 408,
    LengthRequired: 411,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedContent: 415,
    BadRelease: 422,
    InvalidSensors: 422,
    Unavailable: 503,
    StorageFull: 507,
}


def status_of(error: DroneshieldError) -> int:
    """The HTTP status for a domain error; 500 for one of no known kind."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 500


class ClosesConnection(HTTPException):
    """An error answered before the request body is read: the connection cannot carry another
    request (the unread body would be read as one), so the answer says `Connection: close` and
    the client stops sending instead of meeting a reset, or, reusing the connection, having its
    next request read as this body with both sides waiting (Chromium did)."""

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("Connection", "close")]


class AnnouncedTooLarge(ClosesConnection, RequestEntityTooLarge):
    """A body whose Content-Length is over the limit, refused before it is read."""

    name = "Request Too Large"  # the error code: `request_too_large`, as when streaming


def error_response(
    status: int, code: str, message: str, details: dict[str, object] | None = None
) -> Response:
    """The error body; `details` (per-row errors of a provisioning request, a count) beside
    code and message when given."""
    response = jsonify({"error": {**(details or {}), "code": code, "message": message}})
    response.status_code = status
    return response


def install(app: Quart) -> None:
    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        # An exception may name its code (`code_name`); else the status's name says it.
        code = getattr(exc, "code_name", None) or (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        for key, value in exc.get_headers():
            if key.lower() not in ("content-type", "content-length"):
                response.headers[key] = value
        return response

    @app.after_request
    async def local_redirects(response: Response) -> Response:
        # Routing redirects (RequestRedirect) skip the error handlers; they pass here.
        location = response.headers.get("Location")
        if location is not None and 300 <= response.status_code < 400:
            response.headers["Location"] = _local(location)
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_parameters(exc: RequestSchemaValidationError) -> Response:
        return error_response(400, "invalid_parameter", _validation_message(exc))

    @app.errorhandler(UnicodeDecodeError)
    async def undecodable_body(exc: UnicodeDecodeError) -> Response:
        # Quart decodes a JSON body as UTF-8 before parsing it, and lets this escape.
        return error_response(400, "invalid_body", "the request body is not UTF-8 JSON")

    @app.errorhandler(DroneshieldError)
    async def droneshield_error(exc: DroneshieldError) -> Response:
        status = status_of(exc)
        if status == 500:
            log.error("request %s failed: %r", g.get("request_id"), exc)
        return error_response(status, exc.code, exc.message, exc.details)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        if _ended_by_the_database(exc):
            # The same request may succeed again, so it is not an internal error.
            log.warning("request %s: the database failed it (%r)", g.get("request_id"), exc)
            return error_response(
                503,
                DatabaseUnavailable.code,
                "the database could not answer this request; retry",
            )
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return error_response(500, "internal", "internal server error")


def _ended_by_the_database(exc: Exception) -> bool:
    """Whether the database ended the request's statement for a cause a retry may no longer
    meet (cancelled, a deadlock broken, a lock timeout, the server going away, the connection
    lost mid-statement); not asyncpg's client-side errors, which a bug raises every time."""
    return (isinstance(exc, asyncpg.PostgresError) and is_transient(exc)) or isinstance(
        exc, asyncpg.ConnectionDoesNotExistError
    )


def _local(url: str) -> str:
    """`url` without scheme and host. werkzeug builds a redirect (`/a//b` → `/a/b`) from the
    request's Host header, so anyone could have the daemon answer with a Location on a host of
    their choosing; a path keeps the client on the host it asked."""
    parts = urlsplit(url)
    path = "/" + parts.path.lstrip("/")  # never `//host`, which browsers read as a host
    return path + (f"?{parts.query}" if parts.query else "")


# pydantic's error types, as the rule they break in the API's words (the context fills them).
RULE_OF: Final[dict[str, str]] = {
    "literal_error": "must be one of {choices}",
    "enum": "must be one of {choices}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "greater_than_equal": "must be at least {ge:,}",
    "greater_than": "must be more than {gt:,}",
    "less_than_equal": "must be at most {le:,}",
    "less_than": "must be less than {lt:,}",
    "string_too_long": "must be at most {max_length:,} characters",
    "string_too_short": "must be at least {min_length:,} characters",
    # A query parameter is checked as a sequence before as a string: its items are characters.
    "too_long": "must be at most {max_length:,} characters",
    "missing": "is required",
    "extra_forbidden": "is not a parameter of this endpoint",
}
# What pydantic adds to an error's location for the member of a union that failed.
_UNION_MEMBER: Final = re.compile(r"^(none|str|int|float|bool|.*\[.*\])$")


def _validation_message(exc: RequestSchemaValidationError) -> str:
    """Validation errors in the API's words, one clause per parameter:
    `status must be one of never, online, offline; limit must be an integer`."""
    details = getattr(exc.validation_error, "errors", None)
    if not callable(details):
        return str(exc.validation_error)
    return "; ".join(
        validation_clause(name, errors) for name, errors in _by_parameter(details()).items()
    )


def _by_parameter(details: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for error in details:
        first, *rest = error["loc"] or ("query",)
        path = [str(first), *(str(p) for p in rest if not _UNION_MEMBER.match(str(p)))]
        grouped.setdefault(".".join(path), []).append(error)
    return grouped


def validation_clause(name: str, errors: list[Any]) -> str:
    """One parameter's errors as one rule. For a union (`Status | None`), "should be None" is
    pydantic trying the other member: the member that says what is allowed speaks."""
    telling = [e for e in errors if e["type"] != "none_required"] or errors
    error = telling[0]
    context = dict(error.get("ctx") or {})
    context["choices"] = ", ".join(re.findall(r"'([^']*)'", str(context.get("expected", ""))))
    rule = RULE_OF.get(error["type"])
    if rule is None:
        return f"{name}: {error['msg']}"
    return f"{name} {rule.format(**context)}"
