"""Prometheus metrics: the metric objects live here, each part of the daemon updates its own.

Counters and histograms are updated where things happen (the writer, uploads, the HTTP app).
Gauges that describe a live structure (the presence wheel, WebSocket clients) are read when
scraped: their owner calls `WHEEL_SENSORS.set_function(...)` once it exists, so a scrape never
waits for, and never slows, the code it observes.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client import generate_latest as _generate_latest

BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)  # reports
COMMIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)

REPORTS: Final = Counter(
    "droneshield_reports",
    "Sensor reports answered by the writer, by outcome",
    ["outcome"],
)
BATCH_SIZE: Final = Histogram(
    "droneshield_batch_size_reports",
    "Reports per group commit (before coalescing to one row per sensor)",
    buckets=BATCH_BUCKETS,
)
COMMIT_SECONDS: Final = Histogram(
    "droneshield_commit_seconds",
    "Time to commit one batch of reports",
    buckets=COMMIT_BUCKETS,
)
WHEEL_SENSORS: Final = Gauge(
    "droneshield_wheel_sensors",
    "Online sensors whose offline deadline the presence wheel holds",
)
WEBSOCKET_CLIENTS: Final = Gauge(
    "droneshield_websocket_clients",
    "Subscribers to live sensor changes (WebSocket clients)",
)
RELAY_CHANGES: Final = Counter(
    "droneshield_relay_changes",
    "Sensor changes through the relay: sent to peers, received from peers (and used), or kept "
    "(heartbeats no peer's clients watch)",
    ["direction"],
)
RELAY_GAPS: Final = Counter(
    "droneshield_relay_gaps",
    "Times changes were lost on the relay and this daemon's clients were told to resync",
)
UPLOADS: Final = Counter(
    "droneshield_upload_files",
    "Release files received, by outcome (created, unchanged, or the rejection code)",
    ["outcome"],
)
UPLOAD_BYTES: Final = Counter(
    "droneshield_upload_bytes",
    "Bytes of release files stored (created only)",
)
HTTP_REQUESTS: Final = Histogram(
    "droneshield_http_request_seconds",
    "HTTP requests by route and status, with their latency",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
WORKER: Final = Info(
    "droneshield_worker",
    "The worker process that answered this scrape (`serve --workers N` share one port)",
)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """Every metric of this process (and the process collector's) in Prometheus text format."""
    return _generate_latest(REGISTRY)
