"""Webhook rules as plain functions: which events exist, how a POST's body is built and signed,
when a failed delivery is tried again, and when the fleet's online share fires an alert.

Nothing here waits or reads a clock: every function takes what it needs (`now`, a random draw),
so the schedules are tested directly and the dispatcher (dispatcher.py) only applies them.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

EVENTS: Final = (
    "sensor.offline",
    "sensor.online",
    "sensor.version_changed",
    "release.uploaded",
    "version.unreleased_reported",
    "fleet.online_below",
)
TEST_EVENT: Final = "webhook.test"  # sent by POST /webhooks/{id}/test, whatever is subscribed

BATCH_MAX: Final = 1000  # events per POST (fewer when their ids are long: `fitting`)
# Characters of X-Droneshield-Event-Ids: servers refuse large headers (by default a header line
# gets 8 KB in nginx and Apache, all headers 8-16 KB in Node), and a refusal (400) is final, so
# a burst would be lost. 6,000 leaves room for the others and still carries ~850 six-digit ids,
# so a burst of 100,000 events takes ~120 POSTs, not the ~230 half of it would.
IDS_HEADER_MAX: Final = 6000
BATCH_WINDOW: Final = 0.25  # seconds an event may wait for others to share its POST
RETRY_BASE: Final = 1.0  # seconds before the first retry (before jitter)
RETRY_CAP: Final = 600.0  # seconds: backoff never grows beyond this
RETRY_AFTER_CAP: Final = 3600.0  # seconds: a longer Retry-After is not honoured beyond this
FLEET_HYSTERESIS: Final = 0.05  # share of the fleet above the threshold that clears an alert


def body(events: Sequence[tuple[int, str, datetime, Mapping[str, Any]]]) -> bytes:
    """`{"events": [{"id", "type", "occurredAt", …subject}]}` for (id, type, at, subject)."""
    return orjson.dumps(
        {
            "events": [
                {"id": str(i), "type": kind, "occurredAt": at.isoformat(), **subject}
                for i, kind, at, subject in events
            ]
        }
    )


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of `<timestamp>.<body>` with the webhook's secret (the
    GitHub/Stripe convention: the receiver checks it and rejects old timestamps, so a captured
    request cannot be replayed later)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def headers(secret: str, now: float, event_ids: Sequence[int], payload: bytes) -> dict[str, str]:
    """The headers of one POST at wall-clock time `now` (Unix seconds)."""
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        "User-Agent": "droneshield-webhooks",
        "X-Droneshield-Event-Ids": ",".join(str(i) for i in event_ids),
        "X-Droneshield-Timestamp": str(timestamp),
        "X-Droneshield-Signature": signature(secret, timestamp, payload),
    }


def fitting(event_ids: Sequence[int]) -> int:
    """How many of `event_ids`, from the first, one POST carries: as many as their
    X-Droneshield-Event-Ids fits in IDS_HEADER_MAX characters (at least 300 of the largest
    bigint ids), and always the first."""
    length = -1  # no comma before the first
    for count, event_id in enumerate(event_ids):
        length += len(str(event_id)) + 1
        if length > IDS_HEADER_MAX:
            return max(count, 1)
    return len(event_ids)


def retryable(status: int | None) -> bool:
    """Whether a failed POST is tried again: no answer (network error, timeout: None), a
    server error, 408 or 429. Any other refusal (4xx, a redirect) will not change by itself."""
    return status is None or status >= 500 or status in (408, 429)


def retry_delay(failures: int, draw: float, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after `failures` consecutive failures (1, 2, …).

    Exponential backoff with "equal jitter" (`draw` in [0, 1) picks within the upper half of the
    step), so endpoints that failed together do not retry together; a Retry-After the endpoint
    sent is honoured when it asks for longer (up to RETRY_AFTER_CAP).
    """
    step = min(RETRY_CAP, RETRY_BASE * 2.0 ** min(failures - 1, 30))
    delay: float = step / 2 + draw * step / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


def jitter() -> float:
    return random.random()


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds: ASCII digits or an HTTP date; None if absent or not understood.

    What a receiver sends must never raise: `str.isdigit` is true of "²" and "①", which
    `float` refuses, and a date with a huge number overflows.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def online_share(by_site: Mapping[str, tuple[int, int]], site: str | None) -> tuple[int, int]:
    """(online, total) of one site, or of the whole fleet when `site` is None, from
    (online, total) per site ('' for sensors with no site). A site with no sensors is (0, 0)."""
    if site is not None:
        return by_site.get(site, (0, 0))
    return sum(o for o, _ in by_site.values()), sum(t for _, t in by_site.values())


def fleet_alert(below: bool, online: int, total: int, threshold: float) -> tuple[bool, bool]:
    """The next state of a `fleet.online_below` watch (of the fleet or of one site), and
    whether it fires now.

    It fires once when the online share drops under `threshold` and is re-armed only when the
    share is back at `threshold + FLEET_HYSTERESIS` (or the whole fleet), so a share hovering
    around the threshold does not send an alert per check. An empty fleet (or site) changes
    nothing.
    """
    if total == 0:
        return below, False
    share = online / total
    if not below:
        return (True, True) if share < threshold else (False, False)
    rearm = min(1.0, threshold + FLEET_HYSTERESIS)
    return (False, False) if share >= rearm else (True, False)
