"""Every HTTP error is `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

import logging

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import DroneshieldError, UploadRejected

log = logging.getLogger(__name__)


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

    @app.errorhandler(UploadRejected)
    async def upload_rejected(exc: UploadRejected) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(DroneshieldError)
    async def droneshield_error(exc: DroneshieldError) -> Response:
        return error_response(400, exc.code, exc.message)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal server error")
