"""Liveness and readiness, for orchestrators and `just dev`."""

from __future__ import annotations

from quart import Blueprint, current_app
from quart_schema import validate_response

from ..db import migrate
from .errors import error_response
from .schema import ApiModel, errors

blueprint = Blueprint("health", __name__)


class Health(ApiModel):
    status: str


@blueprint.get("/healthz")
@validate_response(Health)
@errors()
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@blueprint.get("/readyz")
@validate_response(Health)
@errors(503)
async def readyz():  # type: ignore[no-untyped-def]
    """Ready for traffic: the database answers and every migration is applied."""
    pool = current_app.config["DRONESHIELD_POOL"]
    try:
        async with pool.acquire() as conn:
            missing = await migrate.pending(conn)
    except Exception as exc:
        return error_response(503, "database_unavailable", f"database unreachable: {exc!r}")
    if missing:
        return error_response(503, "migrations_pending", f"migrations not applied: {missing}")
    return {"status": "ready"}
