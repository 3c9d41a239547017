"""Prometheus metrics: the metric objects live here, each part of the daemon updates its own.

Three kinds, each correct whichever worker of `serve --workers N` answers the scrape:
- Process counters and histograms (reports, commits, uploads, HTTP requests, transitions) are
  updated where things happen. Under `--workers N` they run in prometheus-client's
  multiprocess mode: the supervisor gives the workers one directory
  (`PROMETHEUS_MULTIPROC_DIR`, set before they import prometheus-client), each worker's values
  live in memory-mapped files there, and a scrape sums every worker's files, those of workers
  that exited included, so a counter never goes backwards when a worker restarts. The price
  is prometheus-client's: no per-process collectors (CPU, memory, GC) under `--workers N`.
- Live gauges of a process's structures (the presence wheel, WebSocket clients) are read from
  their owner (`observe`), written when scraped and every `LIVE_INTERVAL` (so another
  worker's scrape sees them at most that old), and summed over the live workers (the wheel
  per worker, labelled `pid`: how the kernel spreads the sensors' connections).
- Fleet gauges (sensors by status, retired included, and by version, reports of versions
  never uploaded) describe the fleet, not a process: each scrape reads them from the
  maintained counters (`fleet_count`, `retired_count`, `unreleased_version`: O(versions),
  never a count of rows) and renders them beside the rest (`fleet_gauges`), so every worker
  answers the same fleet-wide numbers and nothing is summed twice.

A supervisor port serving the metrics would have needed its own HTTP server and a way to
reach each worker; multiprocess mode is prometheus-client's own answer and keeps `/metrics`
on the one HTTP port.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, NoReturn

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from .domain import Applied, display

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it at import
# Whether this process imported prometheus-client with a shared directory (a worker).
MULTIPROCESS: Final = values.ValueClass is not values.MutexValue
LIVE_INTERVAL: Final = 1.0  # seconds between writes of the live gauges

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
LANE_COMMITS: Final = Counter(
    "droneshield_lane_commits",
    "Batches of reports committed, by writer lane (the first takes all until reports wait)",
    ["lane"],
)
BATCH_SPLITS: Final = Counter(
    "droneshield_batch_splits",
    "Batches (or parts of one) committed again in two parts: in halves when a row's error "
    "failed them (a trigger raising, a constraint), or without a sensor whose row another "
    "transaction held past the lock wait; at most 64 for one batch",
)
GC_PAUSE_SECONDS: Final = Histogram(
    "droneshield_gc_pause_seconds",
    "Time the garbage collector held the process, per pass, by generation",
    ["generation"],
    buckets=COMMIT_BUCKETS,
)
WHEEL_SENSORS: Final = Gauge(
    "droneshield_wheel_sensors",
    "Online sensors whose offline deadline the presence wheel holds (per worker: pid)",
    multiprocess_mode="liveall",
)
WEBSOCKET_CLIENTS: Final = Gauge(
    "droneshield_websocket_clients",
    "Subscribers to live sensor changes (WebSocket clients)",
    multiprocess_mode="livesum",
)
TRANSITIONS: Final = Counter(
    "droneshield_transitions",
    "Sensors that went online (from never or offline) or offline, as committed",
    ["to"],
)
RELAY_CHANGES: Final = Counter(
    "droneshield_relay_changes",
    "Sensor changes through the relay: sent to peers, received from peers (and used), kept "
    "(heartbeats no peer's clients watch) or alone (transitions while no peer was on the bus)",
    ["direction"],
)
RELAY_RETRIES: Final = Counter(
    "droneshield_relay_retries",
    "Attempts to send changes to peers that the bus did not take (all are sent again; a count "
    "that keeps rising: the bus is away)",
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
WEBHOOK_DELIVERIES: Final = Counter(
    "droneshield_webhook_deliveries",
    "Webhook events by outcome of the POST that carried them: delivered, retried (the POST "
    "failed and will be tried again) or failed (given up)",
    ["outcome"],
)
OUTBOX_DEPTH: Final = Gauge(
    "droneshield_outbox_depth",
    "Webhook events not delivered yet, all webhooks and daemons (read from the database)",
    multiprocess_mode="livemostrecent",  # every worker reads the same fleet-wide figure
)
OUTBOX_OLDEST_AGE: Final = Gauge(
    "droneshield_outbox_oldest_age_seconds",
    "Age of the oldest webhook event not delivered yet (0 when none)",
    multiprocess_mode="livemostrecent",
)
WORKER: Final = Gauge(
    "droneshield_worker_info",
    "The live workers of `serve --workers N` (1 each)",
    ["pid"],
    multiprocess_mode="liveall",
)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

_live: dict[Gauge, Callable[[], float]] = {}


def observe(gauge: Gauge, read: Callable[[], float]) -> None:
    """Keep `gauge` at what `read()` says (called when scraped and every LIVE_INTERVAL; it
    must be cheap and must not block)."""
    _live[gauge] = read


def publish_live() -> None:
    for gauge, read in _live.items():
        gauge.set(read())


async def serve_live_gauges(
    *,
    interval: float = LIVE_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Write the live gauges every `interval`, so that a scrape another worker answers reads
    them at most that old. Cancellation: nothing to clean up."""
    task_status.started()
    while True:
        publish_live()
        await trio.sleep(interval)


def count_transitions(rows: Sequence[Applied]) -> None:
    """Writer sink: the committed reports that brought their sensor online. O(rows)."""
    came_online = sum(1 for r in rows if not r.was_online)
    if came_online:
        TRANSITIONS.labels("online").inc(came_online)


class _Families:
    """Metric families rendered as they are (the fleet gauges of one scrape)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


@dataclass(frozen=True, slots=True)
class UnreleasedVersion:
    """A version sensors reported that was never uploaded, as the fleet gauges show it."""

    version: str  # `v1.2.3`
    reports: int
    last_seen_at: datetime


def fleet_gauges(
    by_status: Mapping[str, int] | None,
    by_version: Mapping[str | None, int],
    unreleased: Sequence[UnreleasedVersion] = (),
) -> list[Metric]:
    """The fleet-wide gauges of one scrape: sensors per status and per version (`v1.2.3`,
    `none`), reports of versions never uploaded, and whether they could be read (`by_status`
    None: the database was unreachable, so only `droneshield_fleet_readable 0` is given, not
    stale numbers)."""
    readable = GaugeMetricFamily(
        "droneshield_fleet_readable",
        "1 when this scrape read the fleet gauges from the database, 0 when it could not",
        value=0 if by_status is None else 1,
    )
    if by_status is None:
        return [readable]
    sensors = GaugeMetricFamily(
        "droneshield_sensors",
        "Provisioned sensors by status (never, online, offline, retired), fleet-wide",
        labels=["status"],
    )
    for status, n in by_status.items():
        sensors.add_metric([status], n)
    versions = GaugeMetricFamily(
        "droneshield_sensors_by_version",
        "Sensors by stored version (`v1.2.3`; `none`: no stored version), fleet-wide",
        labels=["version"],
    )
    for version, n in by_version.items():
        versions.add_metric([display(version) if version else "none"], n)
    reports = GaugeMetricFamily(
        "droneshield_unreleased_version_reports",
        "Reports of a version never uploaded, fleet-wide (the version leaves once uploaded)",
        labels=["version"],
    )
    last_seen = GaugeMetricFamily(
        "droneshield_unreleased_version_last_seen_seconds",
        "When a version never uploaded was last reported (Unix time)",
        labels=["version"],
    )
    for u in unreleased:
        reports.add_metric([u.version], u.reports)
        last_seen.add_metric([u.version], u.last_seen_at.timestamp())
    return [readable, sensors, versions, reports, last_seen]


def exposition(fleet: Sequence[Metric]) -> bytes:
    """Every metric in Prometheus text format: this process's (or, for a worker, the sum over
    all workers'), then the fleet gauges of this scrape."""
    publish_live()
    registry = REGISTRY
    if MULTIPROCESS:
        registry = CollectorRegistry()
        # prometheus-client's multiprocess module has no annotations.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return _generate_latest(registry) + _generate_latest(_Families(fleet))


@contextmanager
def shared_directory() -> Iterator[Path]:
    """A fresh directory for a worker group's metric files (given to the workers as
    `MULTIPROC_ENV`), removed when the group stops."""
    path = Path(tempfile.mkdtemp(prefix="droneshield-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(directory: Path, pid: int) -> None:
    """Forget an exited worker's live gauges (its counters stay: sums never go backwards)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
