"""The daemon: one nursery that supervises everything. Read top to bottom, this is the
architecture: pools (everything's, and one for listings) → relay (changes to and from other
daemons) → writer → presence → live metrics → fleet totals → page anchors → search indexes an
import left to build → fleet history (a sample a minute) → webhook dispatcher → gRPC ingest →
HTTP/WebSocket app.

Cancelling `run` (a signal, a test leaving its fixture) stops it all: servers stop accepting,
reports in flight are committed or answered with an error, the pool closes last. A crash in any
task cancels the others and propagates, so nothing is left half-running.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import trio

from . import collector, metrics
from .aio_loop import open_loop
from .anchors import serve_anchors
from .config import Settings
from .db.history import HistoryDb
from .db.pool import open_pool
from .db.presence import PresenceDb
from .db.sensors import LISTING_SESSION
from .dispatcher import Dispatcher
from .domain import Applied
from .history import serve_history
from .hub import Hub
from .ingest import tls as grpc_tls
from .ingest.bridge import Submitter, serve_grpc
from .ingest.budgets import grpc_budgets, grpc_limits
from .ports import naming
from .presence import Tracker, serve_presence
from .relay import Relay, open_bus
from .reports import Pending
from .search_index import serve_search_indexes
from .summary import serve_summary
from .web.app import create_app
from .web.server import http_limits, serve_http
from .writer import Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """What `run` hands to `task_status.started()`: where it listens, and its parts for tests."""

    grpc_port: int
    http_port: int
    writer: Writer
    hub: Hub
    tracker: Tracker
    relay: Relay


async def run(
    settings: Settings,
    database_url: str,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run the daemon until cancelled.

    Raises:
        Whatever a component fails with (for example PortInUse); the other
        components are cancelled and cleaned up first.
    """
    # Listings get as many connections as the writer's lanes leave them in the main pool, in a
    # pool of their own whose sessions plan each statement for its arguments (LISTING_SESSION).
    listing_size = settings.pool_size - settings.writer_lanes
    async with (
        open_loop(),
        open_pool(database_url, size=settings.pool_size) as pool,
        open_pool(database_url, size=listing_size, session=LISTING_SESSION) as listing_pool,
    ):
        send, receive = trio.open_memory_channel[Pending](settings.queue_size)
        hub = Hub()
        metrics.observe(metrics.WEBSOCKET_CLIENTS, lambda: hub.subscribers)
        relay = Relay(hub, open_bus(settings.relay_url, settings.relay_stream, pool, database_url))

        def publish_committed(rows: Sequence[Applied]) -> None:
            # Every committed report is a change (at least of last_seen_at). A heartbeat that
            # no client here and no peer's clients watch is only counted: building its change
            # was a quarter of the batch path's CPU, for a change nobody would receive. Unless
            # it changes the version the hub remembers the sensor reporting unstored (listings
            # show it): a sensor moving to or from a version nobody uploaded.
            wanted = [
                r
                for r in rows
                if not r.heartbeat
                or hub.wants_heartbeat(r.serial)
                or relay.wants(r.serial)
                or hub.reported_changes(r.id, None if r.version_known else r.reported_version)
            ]
            if len(wanted) < len(rows):
                relay.kept(len(rows) - len(wanted))
            hub.publish(r.state() for r in wanted)

        writer = Writer(
            pool,
            receive,
            lanes=settings.writer_lanes,
            batch_max=settings.batch_max,
            shutdown_grace=settings.shutdown_grace,
            sinks=[publish_committed, metrics.count_transitions],
        )
        submitter = Submitter(send, ack_timeout=settings.ack_timeout)
        dispatcher = Dispatcher(pool, settings, hub)
        app = create_app(
            settings,
            pool,
            listing_pool=listing_pool,
            hub=hub,
            submit=submitter.submit_from_trio,
            events_queued=dispatcher.ring,
        )
        async with trio.open_nursery() as nursery:
            # First: what the writer and expiry publish from their first change on is relayed.
            await nursery.start(relay.serve)
            await nursery.start(writer.run)
            tracker = await nursery.start(serve_presence, PresenceDb(pool), hub, settings)
            writer.add_sink(tracker.track)
            metrics.observe(metrics.WHEEL_SENSORS, lambda: len(tracker.wheel))
            await nursery.start(metrics.serve_live_gauges)
            await nursery.start(serve_summary, pool, hub)
            await nursery.start(serve_anchors, pool)
            await nursery.start(serve_search_indexes, pool, database_url)
            await nursery.start(
                partial(serve_history, HistoryDb(pool), retention=settings.history_retention)
            )
            await nursery.start(dispatcher.serve)
            grace = settings.shutdown_grace
            shared = settings.workers > 1  # the other workers listen on the same ports
            with naming("gRPC", settings.host, settings.grpc_port):
                grpc_port = await nursery.start(
                    partial(
                        serve_grpc,
                        submitter,
                        settings.host,
                        settings.grpc_port,
                        grace=grace,
                        reuse_port=shared,
                        tls=grpc_tls.server_context(settings),
                        token=settings.grpc_token,
                        max_message_bytes=settings.grpc_max_message_bytes,
                        budgets=grpc_budgets(settings),
                        limits=grpc_limits(settings),
                        max_health_calls=settings.grpc_max_health_calls,
                    )
                )
            with naming("HTTP", settings.host, settings.http_port):
                http_port = await nursery.start(
                    partial(
                        serve_http,
                        app,
                        settings.host,
                        settings.http_port,
                        grace=grace,
                        send_timeout=settings.send_timeout,
                        reuse_port=shared,
                        tls=settings.tls_files,
                        websocket_max_message=settings.ws_max_message_bytes,
                        keep_alive_timeout=settings.http_keep_alive_timeout,
                        limits=http_limits(settings),
                    )
                )
            log.info("droneshield ready: gRPC :%d, HTTP :%d", grpc_port, http_port)
            collector.tune(settings.gc_young_threshold)
            collector.settle(settings.gc_young_threshold)
            task_status.started(Running(grpc_port, http_port, writer, hub, tracker, relay))
            try:
                await tracker.recovered.wait()  # the wheel is the largest long-lived structure
                collector.settle(settings.gc_young_threshold)
                await trio.sleep_forever()
            finally:
                collector.release()
    raise AssertionError("unreachable")  # pragma: no cover
