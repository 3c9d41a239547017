"""Fleet history queries: one sample of the maintained totals (by status, version and site) per
minute, pruning, and the samples of a time range in buckets of a step.

A sample reads `fleet_count` (O(versions)) and writes it under the minute the database's
`now()` falls in, in one statement: several daemons sampling the same minute write one row
(`ON CONFLICT DO NOTHING`), and the database's clock, not the daemon's, decides the minute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from .pool import Connection, Pool, acquire

# Buckets are aligned to this instant, so a day's bucket starts at midnight UTC.
_ORIGIN: Final = "timestamptz '2000-01-01 00:00:00+00'"

_SAMPLE: Final = f"""
WITH totals AS (
    SELECT status, version, sum(n) AS n FROM fleet_count GROUP BY status, version
), written AS (
    INSERT INTO fleet_history (minute, online, offline, never, versions, sites)
    SELECT date_bin('1 minute', now(), {_ORIGIN}),
           coalesce(sum(n) FILTER (WHERE status = 'online'), 0),
           coalesce(sum(n) FILTER (WHERE status = 'offline'), 0),
           coalesce(sum(n) FILTER (WHERE status = 'never'), 0),
           coalesce((SELECT jsonb_object_agg(version, n) FROM (
               SELECT version, sum(n) AS n FROM totals GROUP BY version HAVING sum(n) <> 0
           ) AS per_version), '{{}}'::jsonb),
           coalesce((SELECT jsonb_object_agg(site, jsonb_build_array(online, offline, never))
               FROM (
                   SELECT site,
                          coalesce(sum(n) FILTER (WHERE status = 'online'), 0) AS online,
                          coalesce(sum(n) FILTER (WHERE status = 'offline'), 0) AS offline,
                          coalesce(sum(n) FILTER (WHERE status = 'never'), 0) AS never
                   FROM fleet_count GROUP BY site HAVING sum(n) <> 0
               ) AS per_site), '{{}}'::jsonb)
    FROM totals
    ON CONFLICT (minute) DO NOTHING
    RETURNING minute
)
SELECT (SELECT count(*) FROM written) AS written,
       extract(epoch FROM date_bin('1 minute', now(), {_ORIGIN}) + interval '1 minute' - now())
           ::float8 AS until_next
"""

_PRUNE: Final = """
DELETE FROM fleet_history
WHERE minute IN (
    SELECT minute FROM fleet_history WHERE minute < now() - $1::interval ORDER BY minute LIMIT $2
)
"""

# With a site ($4), a point is that site's totals (0 in a minute it had no sensors) and carries
# no versions: samples keep versions fleet-wide only.
_RANGE: Final = f"""
SELECT DISTINCT ON (bucket)
       date_bin($3::interval, minute, {_ORIGIN}) AS bucket, minute,
       CASE WHEN $4::text IS NULL THEN online ELSE coalesce((sites -> $4 ->> 0)::bigint, 0) END
           AS online,
       CASE WHEN $4::text IS NULL THEN offline ELSE coalesce((sites -> $4 ->> 1)::bigint, 0) END
           AS offline,
       CASE WHEN $4::text IS NULL THEN never ELSE coalesce((sites -> $4 ->> 2)::bigint, 0) END
           AS never,
       CASE WHEN $4::text IS NULL THEN versions ELSE '{{}}'::jsonb END AS versions
FROM fleet_history
WHERE minute >= $1 AND minute < $2
ORDER BY bucket, minute DESC
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """The fleet at one moment: sensors per status, and per canonical version ('' for none)."""

    at: datetime  # the start of the bucket the sample stands for
    sampled: datetime  # the minute it was taken: the bucket's last (a coarse bucket's is later)
    online: int
    offline: int
    never: int
    versions: dict[str, int]


async def sample(conn: Connection) -> tuple[bool, float]:
    """Write this minute's totals unless a row for it exists: (whether this call wrote it,
    seconds from the database's now() to the next minute)."""
    row = await conn.fetchrow(_SAMPLE)
    assert row is not None  # a SELECT without FROM: always one row
    return bool(row["written"]), float(row["until_next"])


async def prune(conn: Connection, older_than: float, limit: int) -> int:
    """Delete up to `limit` of the oldest samples older than `older_than` seconds; how many."""
    status = await conn.execute(_PRUNE, timedelta(seconds=older_than), limit)
    return int(status.rsplit(" ", 1)[-1])


async def samples(
    conn: Connection, start: datetime, end: datetime, step: timedelta, site: str | None = None
) -> list[Sample]:
    """For each bucket of `step` (aligned to midnight UTC) holding samples in [start, end), the
    last of them, stamped with the bucket's start; oldest first. With `site` ('' for sensors
    without one), that site's totals, without versions."""
    rows = await conn.fetch(_RANGE, start, end, step, site)
    return [
        Sample(
            r["bucket"],
            r["minute"],
            r["online"],
            r["offline"],
            r["never"],
            _versions(r["versions"]),
        )
        for r in rows
    ]


def _versions(raw: object) -> dict[str, int]:
    # asyncpg hands jsonb over as text unless a codec is set; the pool sets none.
    value = json.loads(raw) if isinstance(raw, str) else raw
    assert isinstance(value, dict)
    return {str(k): int(v) for k, v in value.items()}


class HistoryDb:
    """The sampler's queries on pooled connections: what it holds as its store.

    Raises (each method): DatabaseUnavailable when no connection can be had; asyncpg's errors
    when a statement fails (`pool.is_transient` tells which may succeed later).
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def sample(self) -> tuple[bool, float]:
        async with acquire(self._pool) as conn:
            return await sample(conn)

    async def prune(self, older_than: float, limit: int) -> int:
        async with acquire(self._pool) as conn:
            return await prune(conn, older_than, limit)
