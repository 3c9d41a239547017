"""Every HTTP error is `{"error": {"code", "message"}}` with the right status: the one place
where domain errors (errors.py) become HTTP statuses."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from quart import Quart, Response, g, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from ..errors import (
    BadRelease,
    Conflict,
    DroneshieldError,
    Invalid,
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
    Conflict: 409,
    TooLarge: 413,
    UnsupportedContent: 415,
    BadRelease: 422,
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


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def install(app: Quart) -> None:
    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
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

    @app.errorhandler(DroneshieldError)
    async def droneshield_error(exc: DroneshieldError) -> Response:
        status = status_of(exc)
        if status == 500:
            log.error("request %s failed: %r", g.get("request_id"), exc)
        return error_response(status, exc.code, exc.message)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return error_response(500, "internal", "internal server error")


def _local(url: str) -> str:
    """`url` without scheme and host. werkzeug builds a redirect (`/a//b` → `/a/b`) from the
    request's Host header, so anyone could have the daemon answer with a Location on a host of
    their choosing; a path keeps the client on the host it asked."""
    parts = urlsplit(url)
    path = "/" + parts.path.lstrip("/")  # never `//host`, which browsers read as a host
    return path + (f"?{parts.query}" if parts.query else "")


def _validation_message(exc: RequestSchemaValidationError) -> str:
    """pydantic's errors as one line: `limit: Input should be a valid integer`."""
    details = getattr(exc.validation_error, "errors", None)
    if not callable(details):
        return str(exc.validation_error)
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in details()
    )
