"""What a request handler reaches through the app: the daemon's settings, database pools, hub
(live views), report ingest and the webhook dispatcher's doorbell."""

from __future__ import annotations

from collections.abc import Callable

from quart import current_app

from ..config import Settings
from ..db.pool import Pool
from ..errors import IngestUnavailable
from ..hub import Hub
from ..ingest.service import Submit


def settings() -> Settings:
    found: Settings = current_app.config["DRONESHIELD_SETTINGS"]
    return found


def pool() -> Pool:
    found: Pool = current_app.config["DRONESHIELD_POOL"]
    return found


def listing_pool() -> Pool:
    """The connections that serve `GET /sensors` (db.sensors.LISTING_SESSION)."""
    found: Pool = current_app.config["DRONESHIELD_LISTING_POOL"]
    return found


def hub() -> Hub:
    """The fan-out to live views (the daemon's; a fresh, unfed one in HTTP-only apps)."""
    found: Hub = current_app.config["DRONESHIELD_HUB"]
    return found


def submit() -> Submit:
    """Hands validated reports to the writer (the daemon's; absent in HTTP-only apps)."""
    found: Submit | None = current_app.config.get("DRONESHIELD_SUBMIT")
    if found is None:
        raise IngestUnavailable("report ingest is not running in this process")
    return found


def events_queued() -> None:
    """Tell the webhook dispatcher that a commit queued events (none in HTTP-only apps)."""
    ring: Callable[[], None] | None = current_app.config.get("DRONESHIELD_EVENTS_QUEUED")
    if ring is not None:
        ring()
