"""`GET /metrics`: Prometheus text exposition (see droneshield/metrics.py for what is kept)."""

from __future__ import annotations

import logging

from quart import Blueprint, Response

from .. import metrics
from ..db import software
from ..db.pool import acquire, is_transient
from ..domain import display
from .context import pool
from .schema import Binary, errors, responds

log = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)


class PrometheusText(Binary):
    """Prometheus text exposition format."""

    media_type = "text/plain"


@blueprint.get("/metrics")
@responds(200, PrometheusText)
@errors()
async def prometheus() -> Response:
    """Metrics for Prometheus: reports by outcome, batch sizes, commit latency, wheel size,
    WebSocket clients, uploads, HTTP requests, versions reported and never uploaded, and the
    process's own."""
    try:
        async with acquire(pool()) as conn:
            found = await software.unreleased(conn)
    except Exception as exc:
        # The daemon's own metrics matter most when the database is down: answer without.
        if not is_transient(exc):
            raise
        log.warning("metrics without unreleased versions: %r", exc)
    else:
        metrics.set_unreleased([(display(u.version), u.reports, u.last_seen_at) for u in found])
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
