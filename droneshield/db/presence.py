"""Presence queries: marking silent sensors offline, rebuilding the wheel, the safety sweep and
the pruning of `sensor_event`.

Every cutoff is computed by the database from its own `now()`, the clock that set
`last_seen_at`, so the daemon's clock never has to agree with the database's; only durations
(`age`: seconds between `last_seen_at` and the statement's `now()`) cross over to trio time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from ..domain import Before, SensorState
from .pool import Connection, Pool, Record, acquire

# The ids find the rows (the primary key), and `online` is read, never searched for: with
# statistics gathered while the fleet was silent (a site or a network down, autovacuum analyzing
# then), PostgreSQL expected no online sensor and walked every online one through the index on
# `online` to find the ids (95,000 rows filtered for 5,000 at 100k sensors; 900,000 at a
# million): expiry fell seconds behind right when a fleet back online went quiet again.
# (`online IS TRUE` is matched to that index as well.) So a sensor another instance has just
# expired is locked too (rare: the wheel holds online sensors), read as it now is, and left.
# A row another transaction holds is skipped, not waited for: one sensor a writer is
# committing (its commit arms it again), another instance expiring it, or an operator's open
# `psql` transaction, which held the whole statement, and every sensor's offline with it,
# until the statement timed out, again at each retry. The online sensors skipped that way
# are answered (`held`, read without the lock) and tried again a resolution later.
_EXPIRE: Final = """
WITH locked AS (
    SELECT id, online, last_seen_at, last_seen_at <= now() - $2::interval AS due
    FROM sensor
    WHERE id = ANY($1::bigint[])
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), updated AS (
    UPDATE sensor s
    SET online = false, status_changed_at = now()
    FROM locked
    WHERE s.id = locked.id AND locked.online AND locked.due
    RETURNING s.id, s.serial, s.version, s.last_seen_at, s.status_changed_at, s.site
), events AS (
    INSERT INTO sensor_event (sensor_id, at, kind, old, new)
    SELECT id, status_changed_at, 'offline', 'online', 'offline' FROM updated
), outbox AS (
    -- Webhooks (db/webhooks.py): committed with the expiry; skipped whole without webhooks.
    INSERT INTO outbox (webhook_id, type, occurred_at, body)
    SELECT w.id, 'sensor.offline', u.status_changed_at,
           jsonb_build_object('sensor', webhook_sensor(u.serial, u.version, 'offline', u.site,
                              u.last_seen_at, u.status_changed_at))
    FROM updated u
    JOIN webhook w ON 'sensor.offline' = ANY (w.events)
                  AND (w.serials IS NULL OR u.serial = ANY (w.serials))
                  AND (w.site IS NULL OR u.site = w.site)
    WHERE EXISTS (SELECT FROM webhook)
    ORDER BY w.id, u.id
)
SELECT 'offline' AS kind, id, serial, version, last_seen_at, status_changed_at, site,
       NULL::float8 AS age
FROM updated
UNION ALL
SELECT 'online', id, NULL, NULL, NULL, NULL, NULL, extract(epoch FROM now() - last_seen_at)
FROM locked
WHERE online AND NOT due
UNION ALL
SELECT 'held', i.id, NULL, NULL, NULL, NULL, NULL, NULL
FROM unnest($1::bigint[]) AS i(id)
WHERE NOT EXISTS (SELECT FROM locked l WHERE l.id = i.id)
  AND (SELECT s.online FROM sensor s WHERE s.id = i.id)  -- by id: see above
"""

# Sensors of `ids` that are offline (not retired): what an expiry whose reply was lost left.
_OFFLINE_STATES: Final = """
SELECT id, serial, version, last_seen_at, status_changed_at, site
FROM sensor
WHERE id = ANY($1::bigint[]) AND NOT online AND last_seen_at IS NOT NULL AND retired_at IS NULL
ORDER BY id
"""

_ONLINE_PAGE: Final = """
SELECT id, extract(epoch FROM now() - last_seen_at)::float8 AS age
FROM sensor
WHERE online AND id > $1
ORDER BY id
LIMIT $2
"""

_STALE_PAGE: Final = """
SELECT id
FROM sensor
WHERE online AND id > $1 AND last_seen_at <= now() - $3::interval
ORDER BY id
LIMIT $2
"""

# With the events go the versions never uploaded that nobody reported for as long: a sensor
# may report any version, so their aggregate grew with every one ever invented.
_PRUNE_EVENTS: Final = """
WITH unreleased AS (
    DELETE FROM unreleased_version
    WHERE version IN (
        SELECT version FROM unreleased_version WHERE last_seen_at < now() - $1::interval
        ORDER BY last_seen_at LIMIT $2
    )
    RETURNING 1
), events AS (
    DELETE FROM sensor_event
    WHERE id IN (
        SELECT id FROM sensor_event WHERE at < now() - $1::interval ORDER BY at LIMIT $2
    )
    RETURNING 1
)
SELECT greatest((SELECT count(*) FROM unreleased), (SELECT count(*) FROM events))
"""


@dataclass(frozen=True, slots=True)
class Expiry:
    """What one expiry statement did.

    `offline` holds the sensors it marked offline (each with an 'offline' event);
    `still_online` lists the ids it left online because their last report is too recent, with
    that report's age in seconds by the database's clock; `held`, the online ones it skipped
    because another transaction held their rows.
    """

    offline: list[SensorState] = field(default_factory=list)
    still_online: list[tuple[int, float]] = field(default_factory=list)
    held: list[int] = field(default_factory=list)


async def expire(conn: Connection, ids: Sequence[int], offline_after: float) -> Expiry:
    """Mark offline those of `ids` that are online and silent for `offline_after` seconds.

    One statement: the rows of `ids` are locked in id order, skipping (not waiting for) those
    another transaction holds (a report being committed, another expiry, an operator's open
    transaction): the online ones among them are answered as `held`. A sensor in none of the
    answer's lists is offline, retired or gone. Each sensor marked offline gets one 'offline'
    event.
    """
    rows = await conn.fetch(_EXPIRE, list(ids), timedelta(seconds=offline_after))
    expiry = Expiry()
    for r in rows:
        if r["kind"] == "offline":
            expiry.offline.append(_offline(r, before=("online", r["version"])))
        elif r["kind"] == "online":
            expiry.still_online.append((r["id"], r["age"]))
        else:
            expiry.held.append(r["id"])
    return expiry


def _offline(row: Record, before: Before | None = None) -> SensorState:
    """An offline sensor's row (id, serial, version, last_seen_at, status_changed_at, site) as
    live views get it."""
    return SensorState(
        row["id"],
        row["serial"],
        row["version"],
        "offline",
        row["last_seen_at"],
        row["status_changed_at"],
        site=row["site"],
        before=before,
    )


async def online_page(conn: Connection, after: int, limit: int) -> list[tuple[int, float]]:
    """Online sensors with id > `after`, by id: (id, seconds since its last report)."""
    rows = await conn.fetch(_ONLINE_PAGE, after, limit)
    return [(r["id"], r["age"]) for r in rows]


async def stale_page(conn: Connection, after: int, limit: int, silent_for: float) -> list[int]:
    """Ids > `after` of sensors still online but silent for `silent_for` seconds, by id."""
    rows = await conn.fetch(_STALE_PAGE, after, limit, timedelta(seconds=silent_for))
    return [r["id"] for r in rows]


async def prune_events(conn: Connection, older_than: float, limit: int) -> int:
    """Delete up to `limit` of the oldest events older than `older_than` seconds, and as many
    versions never uploaded last reported before then; how many rows the busier of the two
    deleted (`limit`: call again; counted by events alone, a fleet whose sensors invent
    versions shed 1,000 of them an hour, however many more were stale)."""
    return int(await conn.fetchval(_PRUNE_EVENTS, timedelta(seconds=older_than), limit))


async def offline_states(conn: Connection, ids: Sequence[int]) -> list[SensorState]:
    """Those of `ids` that are offline, as live views show them."""
    return [_offline(r) for r in await conn.fetch(_OFFLINE_STATES, list(ids))]


class PresenceDb:
    """The presence queries on pooled connections: what the tracker holds as its store.

    Raises (each method): DatabaseUnavailable when no connection can be had; asyncpg's errors
    when a statement fails (`pool.is_transient` tells which may succeed later).
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def expire(self, ids: Sequence[int], offline_after: float) -> Expiry:
        async with acquire(self._pool) as conn:
            return await expire(conn, ids, offline_after)

    async def online_page(self, after: int, limit: int) -> list[tuple[int, float]]:
        async with acquire(self._pool) as conn:
            return await online_page(conn, after, limit)

    async def stale_page(self, after: int, limit: int, silent_for: float) -> list[int]:
        async with acquire(self._pool) as conn:
            return await stale_page(conn, after, limit, silent_for)

    async def prune_events(self, older_than: float, limit: int) -> int:
        async with acquire(self._pool) as conn:
            return await prune_events(conn, older_than, limit)

    async def offline_states(self, ids: Sequence[int]) -> list[SensorState]:
        async with acquire(self._pool) as conn:
            return await offline_states(conn, ids)
