"""The group-commit statement: one set-based UPDATE per batch of reports.

It marks sensors online, stores versions that were uploaded (the join with `software` is the
authority, so an upload committed by any instance counts at once), counts reports of versions
never uploaded in `unreleased_version`, records transitions in `sensor_event`, and returns one
row per known, unretired serial with what changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from ..domain import Applied
from .pool import Connection

_APPLY: Final = """
WITH input AS (
    SELECT serial, version FROM unnest($1::text[], $2::text[]) AS t(serial, version)
), target AS (
    SELECT s.id, s.online AS was_online, s.last_seen_at IS NULL AS was_never,
           s.version AS old_version, sw.version AS known_version, sw.version_key AS known_key,
           i.version AS reported_version
    FROM input i
    JOIN sensor s ON s.serial = i.serial AND s.retired_at IS NULL
    LEFT JOIN software sw ON sw.version = i.version
    ORDER BY s.id
    FOR UPDATE OF s
), updated AS (
    UPDATE sensor s
    SET online = true,
        last_seen_at = now(),
        version = coalesce(t.known_version, s.version),
        version_key = coalesce(t.known_key, s.version_key),  -- sort=version's (migration 0016)
        status_changed_at = CASE WHEN s.online THEN s.status_changed_at ELSE now() END
    FROM target t
    WHERE s.id = t.id
    RETURNING s.id, s.serial, s.version, s.last_seen_at, s.status_changed_at,
              t.was_online, t.was_never, t.old_version, t.reported_version,
              t.known_version IS NOT NULL AS version_known, s.site
), events AS (
    INSERT INTO sensor_event (sensor_id, at, kind, old, new)
    SELECT id, last_seen_at, 'online', CASE WHEN was_never THEN 'never' ELSE 'offline' END,
           'online'
    FROM updated WHERE NOT was_online
    UNION ALL
    SELECT id, last_seen_at, 'version', old_version, version
    FROM updated WHERE version IS DISTINCT FROM old_version
), unreleased AS (
    -- One row per distinct never-uploaded version of the batch, in key order (concurrent
    -- writers lock these rows in the same order, after all their sensor rows: unreferenced
    -- data-modifying CTEs run once the main query has read `updated`).
    INSERT INTO unreleased_version AS u (version, reports, first_seen_at, last_seen_at)
    SELECT reported_version, count(*), now(), now()
    FROM target WHERE reported_version IS NOT NULL AND known_version IS NULL
    GROUP BY reported_version ORDER BY reported_version
    ON CONFLICT (version) DO UPDATE
    SET reports = u.reports + excluded.reports, last_seen_at = excluded.last_seen_at
), first_unreleased AS (
    -- Webhooks (db/webhooks.py): the first report of a version never uploaded, recorded only
    -- while some webhook asks for it.
    INSERT INTO webhook_unreleased_seen (version, first_reported_at)
    SELECT reported_version, max(last_seen_at) FROM updated
    WHERE NOT version_known AND reported_version IS NOT NULL
      AND EXISTS (SELECT FROM webhook WHERE 'version.unreleased_reported' = ANY (events))
    GROUP BY reported_version
    ON CONFLICT (version) DO NOTHING
    RETURNING version, first_reported_at
), outbox AS (
    -- Webhooks: one outbox row per (webhook, event), committed with the change it announces.
    -- The EXISTS is a one-time filter: without webhooks the branch is skipped whole.
    INSERT INTO outbox (webhook_id, type, occurred_at, body)
    SELECT w.id, e.type, e.at, e.body
    FROM (
        SELECT 'sensor.online' AS type, serial, site, last_seen_at AS at,
               jsonb_build_object('sensor', webhook_sensor(serial, version, 'online', site,
                                  last_seen_at, status_changed_at)) AS body
        FROM updated WHERE NOT was_online
        UNION ALL
        SELECT 'sensor.version_changed', serial, site, last_seen_at,
               jsonb_build_object('sensor', webhook_sensor(serial, version, 'online', site,
                                  last_seen_at, status_changed_at),
                                  'previousVersion', 'v' || old_version)
        FROM updated WHERE version IS DISTINCT FROM old_version
        UNION ALL
        SELECT 'version.unreleased_reported', u.serial, u.site, n.first_reported_at,
               jsonb_build_object('version', 'v' || n.version,
                                  'sensor', webhook_sensor(u.serial, u.version, 'online', u.site,
                                  u.last_seen_at, u.status_changed_at))
        FROM first_unreleased n
        JOIN LATERAL (SELECT * FROM updated WHERE reported_version = n.version
                      ORDER BY serial LIMIT 1) u ON true
    ) e
    JOIN webhook w ON e.type = ANY (w.events) AND (w.serials IS NULL OR e.serial = ANY (w.serials))
                  AND (w.site IS NULL OR e.site = w.site)
    WHERE EXISTS (SELECT FROM webhook)
    ORDER BY w.id, e.at
)
SELECT id, serial, version, last_seen_at, status_changed_at, was_online, was_never,
       old_version, reported_version, version_known, site
FROM updated
"""


async def apply_reports(
    conn: Connection, serials: Sequence[str], versions: Sequence[str | None]
) -> list[Applied]:
    """Apply one report per serial (serials unique and sorted, so concurrent writers lock rows
    in the same order and cannot deadlock). Unknown and retired serials are absent from the
    result (`retired` tells them apart).

    One statement is its own transaction: PostgreSQL commits it before answering, so when this
    returns the batch is durable. An explicit BEGIN/COMMIT would add two round trips per batch."""
    rows = await conn.fetch(_APPLY, serials, versions)
    # Positional: the SELECT list is in field order (a dict per row costs 3x as much).
    return [Applied._make(r) for r in rows]


async def retired(conn: Connection, serials: Sequence[str]) -> set[str]:
    """Those of `serials` that are provisioned but retired (reports for them are refused)."""
    rows = await conn.fetch(
        "SELECT serial FROM sensor WHERE serial = ANY($1::text[]) AND retired_at IS NOT NULL",
        serials,
    )
    return {r["serial"] for r in rows}


# PostgreSQL names the row a lock wait was for in the error's context (`XactLockTableWait`).
_LOCKED_TUPLE: Final = re.compile(r'tuple \((\d+),(\d+)\) in relation "sensor"')


async def locked_serial(conn: Connection, exc: BaseException) -> str | None:
    """The sensor whose row `exc` (a lock timeout of the batch statement) waited for, read by
    the row's position without locking it; None when the error does not name one, or the row
    is no longer there (the holder moved or removed it)."""
    found = _LOCKED_TUPLE.search(getattr(exc, "context", None) or "")
    if found is None:
        return None
    serial: str | None = await conn.fetchval(
        "SELECT serial FROM sensor WHERE ctid = $1::tid", (int(found[1]), int(found[2]))
    )
    return serial


# Lowered, never raised: a role's or database's shorter lock_timeout stands.
_LOCK_WAIT: Final = """
SELECT set_config('lock_timeout', $1::int || 'ms', false)
FROM pg_settings
WHERE name = 'lock_timeout' AND (setting::bigint = 0 OR setting::bigint > $1::int)
"""


async def limit_lock_wait(conn: Connection, seconds: float) -> None:
    """Make `conn`'s statements wait `seconds` at most for a lock (`lock_timeout`), unless
    they wait less already."""
    await conn.execute(_LOCK_WAIT, max(1, round(seconds * 1000)))  # 0 would mean no limit
