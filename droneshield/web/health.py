"""Liveness and readiness, for orchestrators and `just dev`."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_response

from ..db import migrate
from ..db.pool import acquire
from ..errors import DatabaseUnavailable, Unavailable
from .context import pool
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
async def readyz() -> dict[str, str]:
    """Ready for traffic: the database answers and every migration is applied."""
    try:
        async with acquire(pool()) as conn:
            missing = await migrate.pending(conn)
    except Exception as exc:
        # Any failure, not only a refused connection: a pooled connection the server dropped
        # fails its statement instead.
        raise DatabaseUnavailable(f"database unreachable: {exc!r}") from None
    if missing:
        raise Unavailable(f"migrations not applied: {missing}", code="migrations_pending")
    return {"status": "ready"}
