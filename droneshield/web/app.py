"""The Quart-Trio application: routes, error format and the settings it needs."""

from __future__ import annotations

from quart_trio import QuartTrio

from ..config import Settings
from ..db.pool import Pool
from ..hub import Hub
from . import dashboard, errors, health, live


def create_app(settings: Settings, pool: Pool, *, hub: Hub | None = None) -> QuartTrio:
    """The app; `hub` feeds `/ws` (a fresh, unfed one when not given, for HTTP-only tests)."""
    app = QuartTrio("droneshield")
    app.config["DRONESHIELD_SETTINGS"] = settings
    app.config["DRONESHIELD_POOL"] = pool
    app.config["DRONESHIELD_HUB"] = hub if hub is not None else Hub()
    app.config["MAX_CONTENT_LENGTH"] = None  # uploads are limited per file while streaming
    errors.install(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(live.blueprint)
    app.register_blueprint(dashboard.blueprint)
    return app
