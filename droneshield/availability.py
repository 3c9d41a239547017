"""Availability: the share of a time window a sensor was online, from its online/offline events.

Pure code (the events and `now` are arguments), so it is tested directly. Before its first
event in the window a sensor was in the state that event left (its `old`); with no event in the
window it was, all along, in the state it is in now. Time before the sensor was provisioned does
not count, so a sensor added an hour ago and online since is 100 % available, not 4 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from .db.sensors import EventRow

DAY: Final = timedelta(days=1)
WEEK: Final = timedelta(days=7)


def availability(
    events: Sequence[EventRow],
    *,
    online_now: bool,
    provisioned_at: datetime,
    now: datetime,
    window: timedelta,
) -> float | None:
    """The share (0 to 1) of the last `window` the sensor was online; None for a sensor
    provisioned at `now` (no time to judge). `events` are its online/offline events, oldest
    first; those before the window are ignored."""
    start = max(now - window, provisioned_at)
    if start >= now:
        return None
    inside = [e for e in events if start < e.at <= now]
    online = inside[0].old == "online" if inside else online_now
    since = start
    up = timedelta()
    for event in inside:
        if online:
            up += event.at - since
        online, since = event.new == "online", event.at
    if online:
        up += now - since
    return up / (now - start)
