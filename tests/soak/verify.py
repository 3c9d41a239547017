"""The soak's end check, against what the emitter recorded and the webhook receiver received:
nothing acknowledged is lost, every long silence was announced, nothing was invented.

- Lost: for a random sample of sensors, the database's `last_seen_at` is at least the send time
  of the last report the daemon acknowledged (the commit happens after the send, before the ack).
- Missed: every silence opened by an acknowledged report, longer than the offline timeout
  plus `slack` and timing out once the webhook was registered, has a `sensor.offline` event for
  that sensor whose `lastSeenAt` lies in the report's send → ack window (± `skew`): the sensor
  was marked offline and alerted.
- Invented: every `sensor.offline` event received matches a recorded silence of that sensor at
  least as long as the timeout minus `slack`.

Event ids are de-duplicated first (delivery is at least once). Sensors with a failed report are
left out of both silence checks (a failed call may or may not have committed, so the daemon's
view of them cannot be predicted) and counted instead.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime
from typing import Any, Final

from droneshield.db.pool import connect

SAMPLE: Final = 1000  # sensors whose last acknowledged report is looked up
SKEW: Final = 0.05  # seconds of clock reading order between the emitter and the database


def dedupe(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Events by id, each once; and how many duplicates were dropped."""
    seen: dict[str, dict[str, Any]] = {}
    for event in events:
        seen.setdefault(event["id"], event)
    return list(seen.values()), len(events) - len(seen)


async def lost(
    database_url: str, last_acked: dict[str, list[float]], rng: random.Random
) -> dict[str, Any]:
    serials = rng.sample(sorted(last_acked), min(SAMPLE, len(last_acked)))
    async with connect(database_url) as conn:
        rows = await conn.fetch(
            "SELECT serial, last_seen_at FROM sensor WHERE serial = ANY($1::text[])", serials
        )
    seen: dict[str, datetime | None] = {r["serial"]: r["last_seen_at"] for r in rows}
    missing = [
        s
        for s in serials
        if seen.get(s) is None or seen[s].timestamp() < last_acked[s][0] - SKEW  # type: ignore[union-attr]
    ]
    return {"sampled": len(serials), "lost": len(missing), "examples": missing[:5]}


def silences(
    record: dict[str, Any],
    offline: list[dict[str, Any]],
    offline_after: float,
    slack: float,
    ended: float,
    watched_from: float | None,
) -> dict[str, Any]:
    """Compare the recorded silences with the offline events (de-duplicated). A silence is
    expected to be alerted when it times out at or after `watched_from`, when the webhook was
    registered (None: it never was): the offline is decided at the earliest at the opening
    report's send time plus `offline_after`, so the webhook exists when that commits."""
    uncertain = set(record["uncertain"])
    gaps: dict[str, list[tuple[float, float, float, bool]]] = defaultdict(list)
    for serial, sent, acked, closed, ok in record["gaps"]:
        gaps[serial].append((sent, acked if ok else sent, closed or ended, ok))
    events: dict[str, list[float]] = defaultdict(list)
    for event in offline:
        events[event["serial"]].append(event["lastSeenAt"])
    expected = missed = 0
    missed_examples: list[str] = []
    for serial, spans in gaps.items():
        if serial in uncertain:
            continue
        for sent, acked, closed, ok in spans:
            if not ok or closed - sent <= offline_after + slack:
                continue
            if watched_from is None or sent + offline_after < watched_from:
                continue
            expected += 1
            if not any(sent - SKEW <= seen <= acked + SKEW for seen in events.get(serial, [])):
                missed += 1
                missed_examples.append(f"{serial} silent from {sent:.3f} for {closed - sent:.1f} s")
    invented = 0
    invented_examples: list[str] = []
    for serial, seens in events.items():
        if serial in uncertain:
            continue
        for seen in seens:
            if not any(
                sent - SKEW <= seen <= closed and closed - seen >= offline_after - slack
                for sent, _, closed, _ in gaps.get(serial, [])
            ):
                invented += 1
                invented_examples.append(f"{serial} last seen {seen:.3f}")
    return {
        "expected_offline": expected,
        "missed": missed,
        "missed_examples": missed_examples[:5],
        "offline_events": len(offline),
        "invented": invented,
        "invented_examples": invented_examples[:5],
        "uncertain_sensors": len(uncertain),
    }
