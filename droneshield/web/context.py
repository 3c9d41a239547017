"""What a request handler reaches through the app: the daemon's settings and database pool."""

from __future__ import annotations

from quart import current_app

from ..config import Settings
from ..db.pool import Pool


def settings() -> Settings:
    return current_app.config["DRONESHIELD_SETTINGS"]


def pool() -> Pool:
    return current_app.config["DRONESHIELD_POOL"]
