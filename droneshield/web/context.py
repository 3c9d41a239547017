"""What a request handler reaches through the app: the daemon's settings and database pool."""

from __future__ import annotations

from quart import current_app

from ..config import Settings
from ..db.pool import Pool


def settings() -> Settings:
    found: Settings = current_app.config["DRONESHIELD_SETTINGS"]
    return found


def pool() -> Pool:
    found: Pool = current_app.config["DRONESHIELD_POOL"]
    return found
