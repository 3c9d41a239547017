"""`GET /metrics`: Prometheus text exposition (see droneshield/metrics.py for what is kept)."""

from __future__ import annotations

from quart import Blueprint, Response

from .. import metrics
from .schema import Binary, errors, responds

blueprint = Blueprint("metrics", __name__)


class PrometheusText(Binary):
    """Prometheus text exposition format."""

    media_type = "text/plain"


@blueprint.get("/metrics")
@responds(200, PrometheusText)
@errors()
async def prometheus() -> Response:
    """Metrics for Prometheus: reports by outcome, batch sizes, commit latency, wheel size,
    WebSocket clients, uploads, HTTP requests, and the process's own."""
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
