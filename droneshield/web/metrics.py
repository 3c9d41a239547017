"""`GET /metrics`: Prometheus text exposition (see droneshield/metrics.py for what is kept, and
why every worker of `serve --workers N` answers for all of them)."""

from __future__ import annotations

import logging

from prometheus_client.core import Metric
from quart import Blueprint, Response

from .. import metrics, summary
from ..db.pool import is_transient
from ..domain import display
from ..errors import DatabaseUnavailable
from .context import pool
from .schema import Binary, errors, responds

log = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)


class PrometheusText(Binary):
    """Prometheus text exposition format."""

    media_type = "text/plain"


async def _fleet() -> list[Metric]:
    """The fleet gauges from the maintained counters; only `droneshield_fleet_readable 0` when
    the database cannot answer (the process metrics matter most exactly then)."""
    try:
        fleet = await summary.fleet(pool())
    except Exception as exc:
        if not (isinstance(exc, DatabaseUnavailable) or is_transient(exc)):
            raise
        log.warning("metrics: fleet totals unreadable: %r", exc)
        return metrics.fleet_gauges(None, {})
    return metrics.fleet_gauges(
        {**summary.by_status(fleet.counts), "retired": fleet.retired},
        summary.by_version(fleet.counts),
        [
            metrics.UnreleasedVersion(display(u.version), u.reports, u.last_seen_at)
            for u in fleet.unreleased
        ],
    )


@blueprint.get("/metrics")
@responds(200, PrometheusText)
@errors()
async def prometheus() -> Response:
    """Metrics for Prometheus: fleet gauges (sensors by status, retired included, and by
    version, versions reported and never uploaded), transitions,
    reports by outcome, batch sizes, commit latency, wheel size, WebSocket clients, uploads,
    HTTP requests, and the process's own (single worker only)."""
    return Response(metrics.exposition(await _fleet()), content_type=metrics.CONTENT_TYPE)
