"""The dashboard: client/ (plain HTML, CSS and ES modules, no build step; the package carries it,
see resources.py) served as is. Its routes are left out of the OpenAPI document: they are a
page, not the API."""

from __future__ import annotations

from typing import Final

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide

from ..resources import CLIENT_DIR

# Everything the page loads comes from this origin; the WebSocket too ('self' covers ws/wss).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

blueprint = Blueprint("dashboard", __name__)


@blueprint.get("/")
@hide
async def index() -> Response:
    response = await send_from_directory(CLIENT_DIR, "index.html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/client/<path:filename>")
@hide
async def asset(filename: str) -> Response:
    """A file of client/ (send_from_directory refuses paths that leave it: 404)."""
    response = await send_from_directory(CLIENT_DIR, filename)
    response.headers["Cache-Control"] = "no-cache"  # revalidated (ETag), so a deploy shows at once
    return response
