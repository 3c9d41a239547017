"""The Quart-Trio application: routes, error format and the settings it needs."""

from __future__ import annotations

from collections.abc import Callable

from quart_trio import QuartTrio

from ..config import Settings
from ..db.pool import Pool
from ..hub import Hub
from ..ingest.service import Submit
from ..resources import CLIENT_DIR
from ..uploads import prepare_dirs
from . import (
    access,
    bodies,
    dashboard,
    errors,
    health,
    live,
    metrics,
    openapi,
    provisioning,
    reports,
    sensors,
    sites,
    software,
    summary,
    uploads,
    webhooks,
)
from .converters import CONVERTERS


def create_app(
    settings: Settings,
    pool: Pool,
    *,
    listing_pool: Pool | None = None,
    hub: Hub | None = None,
    submit: Submit | None = None,
    events_queued: Callable[[], None] | None = None,
) -> QuartTrio:
    """The app; `listing_pool` serves `GET /sensors` (absent only in apps that never query),
    `hub` feeds `/ws` (a fresh, unfed one when not given, for HTTP-only tests),
    `submit` takes `POST /reports` to the writer (without it they are answered 503),
    `events_queued` tells the webhook dispatcher of an upload's or a test's event.

    Raises:
        ValueError: the data directory is inside the dashboard's, which is served as is.
    """
    if settings.data_dir.resolve().is_relative_to(CLIENT_DIR.resolve()):
        raise ValueError(f"data_dir must not be inside {CLIENT_DIR} (it is served)")
    app = QuartTrio("droneshield")
    app.url_map.converters.update(CONVERTERS)
    app.config["DRONESHIELD_SETTINGS"] = settings
    app.config["DRONESHIELD_POOL"] = pool
    app.config["DRONESHIELD_LISTING_POOL"] = listing_pool
    app.config["DRONESHIELD_HUB"] = hub if hub is not None else Hub()
    app.config["DRONESHIELD_SUBMIT"] = submit
    app.config["DRONESHIELD_EVENTS_QUEUED"] = events_queued
    # Uploads are limited per file while streaming; this bounds a whole request
    # (Quart's own defaults, 16 MB and 60 s, would refuse a large release).
    app.config["MAX_CONTENT_LENGTH"] = uploads.max_request_bytes(settings)
    app.config["BODY_TIMEOUT"] = settings.body_timeout
    bodies.install(app)
    errors.install(app)
    openapi.install(app)
    access.install(app)
    app.register_blueprint(health.blueprint)
    for module in (
        sensors,
        provisioning,
        sites,
        software,
        uploads,
        reports,
        summary,
        webhooks,
        metrics,
        live,
        dashboard,
    ):
        app.register_blueprint(module.blueprint)

    @app.before_serving
    async def prepare_storage() -> None:
        await prepare_dirs(settings.staging_dir, settings.upload_dir)

    return app
