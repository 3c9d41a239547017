"""The Quart-Trio application: routes, error format and the settings it needs."""

from __future__ import annotations

from quart_trio import QuartTrio

from ..config import Settings
from ..db.pool import Pool
from . import errors, health


def create_app(settings: Settings, pool: Pool) -> QuartTrio:
    app = QuartTrio("droneshield")
    app.config["DRONESHIELD_SETTINGS"] = settings
    app.config["DRONESHIELD_POOL"] = pool
    app.config["MAX_CONTENT_LENGTH"] = None  # uploads are limited per file while streaming
    errors.install(app)
    app.register_blueprint(health.blueprint)
    return app
