"""Webhooks and their outbox: the subscriptions, the dispatcher's claims and outcomes, the
`fleet.online_below` check, the outbox gauges and the pruning of finished rows.

Events themselves are written by the statements whose changes they announce (db/reports.py,
db/presence.py, db/software.py), never here, so nothing is announced that did not commit. One
daemon at a time sends to a webhook: it holds the webhook's lease (renewed before every POST,
expiring on its own when that daemon dies), which sends an endpoint's events in id order (of
those committed when read: see `pending`) and keeps two daemons from sending the same event in
normal operation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from .pool import Connection

_WEBHOOK_COLUMNS: Final = """
    w.id, w.url, w.events, w.site, w.serials, w.online_below, w.created_at,
    w.failures, w.last_error, w.next_attempt_at,
    (SELECT count(*) FROM outbox o WHERE o.webhook_id = w.id AND o.state = 'pending') AS pending,
    (SELECT min(o.created_at) FROM outbox o
     WHERE o.webhook_id = w.id AND o.state = 'pending') AS oldest_pending_at,
    (SELECT max(o.done_at) FROM outbox o
     WHERE o.webhook_id = w.id AND o.state = 'delivered') AS last_delivered_at,
    (SELECT count(*) FROM outbox o WHERE o.webhook_id = w.id AND o.state = 'failed') AS failed
"""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription as the API shows it (never its secret), with its delivery health."""

    id: int
    url: str
    events: list[str]
    site: str | None
    serials: list[str] | None
    online_below: float | None
    created_at: datetime
    failures: int  # consecutive failed attempts; 0 when the last POST succeeded
    last_error: str | None
    next_attempt_at: datetime
    pending: int
    oldest_pending_at: datetime | None
    last_delivered_at: datetime | None
    failed: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event of a webhook and how its delivery went."""

    id: int
    type: str
    occurred_at: datetime
    state: str  # pending | delivered | failed
    attempts: int
    last_error: str | None
    done_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A webhook this daemon now sends to (holding its lease)."""

    id: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Event:
    """An outbox row to send: `body` holds the event's subject (`{"sensor": {…}}`, …)."""

    id: int
    type: str
    occurred_at: datetime
    body: dict[str, Any]
    age: float  # seconds since it was written, by the database's clock


async def create(
    conn: Connection,
    *,
    url: str,
    events: Sequence[str],
    secret: str,
    site: str | None,
    serials: Sequence[str] | None,
    online_below: float | None,
) -> Webhook:
    webhook_id = await conn.fetchval(
        "INSERT INTO webhook (url, events, secret, site, serials, online_below) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        url,
        list(events),
        secret,
        site,
        None if serials is None else list(serials),
        online_below,
    )
    found = await get(conn, webhook_id)
    assert found is not None  # just inserted, same transaction or not: nobody deleted it yet
    return found


async def get(conn: Connection, webhook_id: int) -> Webhook | None:
    row = await conn.fetchrow(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhook w WHERE w.id = $1", webhook_id
    )
    return None if row is None else Webhook(**dict(row.items()))


async def list_all(conn: Connection) -> list[Webhook]:
    rows = await conn.fetch(f"SELECT {_WEBHOOK_COLUMNS} FROM webhook w ORDER BY w.id")
    return [Webhook(**dict(r.items())) for r in rows]


async def delete(conn: Connection, webhook_id: int) -> bool:
    """Remove a webhook and its outbox rows (pending ones are not sent); whether it existed."""
    return bool(await conn.fetchval("DELETE FROM webhook WHERE id = $1 RETURNING true", webhook_id))


async def deliveries(conn: Connection, webhook_id: int, limit: int) -> list[Delivery]:
    """The webhook's most recent events, newest first."""
    rows = await conn.fetch(
        "SELECT id, type, occurred_at, state, attempts, last_error, done_at FROM outbox "
        "WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
        webhook_id,
        limit,
    )
    return [Delivery(*r) for r in rows]


async def enqueue_test(conn: Connection, webhook_id: int) -> int | None:
    """Queue a `webhook.test` event for this webhook; its id, or None if there is no webhook."""
    result: int | None = await conn.fetchval(
        "INSERT INTO outbox (webhook_id, type, occurred_at, body) "
        "SELECT id, 'webhook.test', now(), '{\"test\": {}}'::jsonb FROM webhook WHERE id = $1 "
        "RETURNING id",
        webhook_id,
    )
    return result


_CLAIM: Final = """
WITH claimed AS (
    UPDATE webhook SET lease_owner = $1, lease_until = now() + $2::interval
    WHERE id = (
        SELECT w.id FROM webhook w
        WHERE (w.lease_until IS NULL OR w.lease_until < now()) AND w.next_attempt_at <= now()
          AND EXISTS (SELECT FROM outbox o WHERE o.webhook_id = w.id AND o.state = 'pending')
        ORDER BY w.next_attempt_at
        LIMIT 1
        -- Not FOR UPDATE: that conflicts with the FOR KEY SHARE every uncommitted outbox insert
        -- holds on its webhook, and the look would skip a webhook that has events coming.
        FOR NO KEY UPDATE SKIP LOCKED
    )
    RETURNING id, url, secret
)
SELECT id, url, secret, NULL::float8 FROM claimed
UNION ALL
-- Nothing claimed: when the soonest webhook with pending events may be (its retry time, or the
-- end of a lease, which a daemon that died leaves behind).
SELECT NULL, NULL, NULL,
       extract(epoch FROM min(greatest(w.next_attempt_at, w.lease_until)) - now())::float8
FROM webhook w
WHERE NOT EXISTS (SELECT FROM claimed)  -- a one-time filter: no scan after a claim
  AND EXISTS (SELECT FROM outbox o WHERE o.webhook_id = w.id AND o.state = 'pending')
HAVING NOT EXISTS (SELECT FROM claimed)  -- and no row: an aggregate always gives one
"""


@dataclass(frozen=True, slots=True)
class Look:
    """What a look for due events found: a webhook now claimed, else the seconds until the
    soonest webhook with pending events may be claimed (None: no webhook has any)."""

    claim: Claim | None
    due_in: float | None


async def claim(conn: Connection, owner: str, lease: float) -> Look:
    """Lease one webhook that has events due and no live lease (another daemon's lease is
    skipped, not waited for)."""
    row = await conn.fetchrow(_CLAIM, owner, timedelta(seconds=lease))
    assert row is not None  # one row: the claim, or the aggregate of the rest
    if row[0] is not None:
        return Look(Claim(row[0], row[1], row[2]), None)
    return Look(None, row[3])


async def renew(conn: Connection, webhook_id: int, owner: str, lease: float) -> bool:
    """Extend our lease; False if it was lost (it expired and another daemon took it)."""
    return bool(
        await conn.fetchval(
            "UPDATE webhook SET lease_until = now() + $3::interval "
            "WHERE id = $1 AND lease_owner = $2 RETURNING true",
            webhook_id,
            owner,
            timedelta(seconds=lease),
        )
    )


async def release(conn: Connection, webhook_id: int, owner: str) -> None:
    await conn.execute(
        "UPDATE webhook SET lease_owner = NULL, lease_until = NULL "
        "WHERE id = $1 AND lease_owner = $2",
        webhook_id,
        owner,
    )


async def pending(conn: Connection, webhook_id: int, after: int, limit: int) -> list[Event]:
    """The webhook's oldest undelivered events with ids above `after`, in id order.

    Ids are taken when a row is inserted, but transactions commit in any order: a row of a
    transaction that commits late can appear below ids already sent, and is sent after them
    (by the next claim, which reads from the start). Rows of one sensor keep their order: the
    transactions writing them take the sensor's row lock before their ids.
    """
    rows = await conn.fetch("SELECT * FROM outbox_due($1, $2, $3)", webhook_id, after, limit)
    return [Event(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]


async def delivered(conn: Connection, webhook_id: int, event_ids: Sequence[int]) -> None:
    """The endpoint accepted these events: done, and the webhook is healthy again."""
    await conn.execute(
        "WITH done AS (UPDATE outbox SET state = 'delivered', attempts = attempts + 1, "
        "done_at = now(), last_error = NULL WHERE id = ANY ($2::bigint[]) AND state = 'pending') "
        "UPDATE webhook SET failures = 0, last_error = NULL, next_attempt_at = now() "
        "WHERE id = $1",
        webhook_id,
        list(event_ids),
    )


_ATTEMPT_FAILED: Final = """
WITH tried AS (
    UPDATE outbox SET attempts = attempts + 1, last_error = $3,
        state = CASE WHEN $5 OR created_at <= now() - $6::interval THEN 'failed' ELSE state END,
        done_at = CASE WHEN $5 OR created_at <= now() - $6::interval THEN now() END
    WHERE id = ANY ($2::bigint[]) AND state = 'pending'
    RETURNING state
), hook AS (
    UPDATE webhook SET failures = failures + 1, last_error = $3,
        next_attempt_at = now() + $4::interval
    WHERE id = $1
)
SELECT count(*) FILTER (WHERE state = 'failed') FROM tried
"""


async def attempt_failed(
    conn: Connection,
    webhook_id: int,
    event_ids: Sequence[int],
    *,
    error: str,
    retry_in: float,
    final: bool,
    retry_for: float,
) -> int:
    """Record a failed POST of these events: each is retried after `retry_in` seconds unless
    `final` (the endpoint refused them for good) or it is older than `retry_for` seconds;
    those are `failed`. How many became failed."""
    failed: int = await conn.fetchval(
        _ATTEMPT_FAILED,
        webhook_id,
        list(event_ids),
        error,
        timedelta(seconds=retry_in),
        final,
        timedelta(seconds=retry_for),
    )
    return failed


async def outbox_stats(conn: Connection) -> tuple[int, float]:
    """Undelivered events of all webhooks, and the age in seconds of the oldest (0 if none)."""
    row = await conn.fetchrow(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
        "FROM outbox WHERE state = 'pending'"
    )
    assert row is not None
    return row[0], row[1]


async def prune(conn: Connection, older_than: float, limit: int) -> int:
    """Delete up to `limit` delivered or failed rows finished over `older_than` seconds ago."""
    status = await conn.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state <> 'pending' "
        "AND done_at < now() - $1::interval ORDER BY done_at LIMIT $2)",
        timedelta(seconds=older_than),
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True, slots=True)
class FleetWatch:
    """A webhook watching the online share of the fleet, or of one site (`site`)."""

    id: int
    online_below: float
    below: bool
    site: str | None


async def lock_fleet_watches(conn: Connection) -> list[FleetWatch]:
    """In a transaction: the webhooks asking for `fleet.online_below`, locked (a daemon that
    finds them locked by another skips them: that one is deciding).

    `FOR NO KEY UPDATE`, the lock `set_below`'s UPDATE takes anyway: `FOR UPDATE` would also
    conflict with the `FOR KEY SHARE` lock every uncommitted outbox insert holds on its webhook
    (the foreign key), so during a wave of events the watch would be skipped.
    """
    rows = await conn.fetch(
        "SELECT id, online_below, below, site FROM webhook "
        "WHERE online_below IS NOT NULL AND 'fleet.online_below' = ANY (events) "
        "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED"
    )
    return [FleetWatch(*r) for r in rows]


async def online_by_site(conn: Connection) -> dict[str, tuple[int, int]]:
    """(online, provisioned) sensors per site ('' for no site), from the maintained counters
    (O(sites x versions))."""
    rows = await conn.fetch(
        "SELECT site, coalesce(sum(n) FILTER (WHERE status = 'online'), 0)::bigint, "
        "sum(n)::bigint FROM fleet_count GROUP BY site"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


@dataclass(frozen=True, slots=True)
class FleetShare:
    """What a `fleet.online_below` event reports: the fleet's (or `site`'s) online share."""

    online: int
    total: int
    threshold: float
    site: str | None


async def set_below(
    conn: Connection, webhook_id: int, below: bool, fire: FleetShare | None
) -> None:
    """Store a watch's state; with `fire`, announce `fleet.online_below`."""
    await conn.execute("UPDATE webhook SET below = $2 WHERE id = $1", webhook_id, below)
    if fire is not None:
        await conn.execute(
            "INSERT INTO outbox (webhook_id, type, occurred_at, body) "
            "VALUES ($1, 'fleet.online_below', now(), jsonb_build_object('fleet', "
            "jsonb_build_object('online', $2::bigint, 'total', $3::bigint, "
            "'share', $2::float8 / $3, 'threshold', $4::float8, 'site', $5::text)))",
            webhook_id,
            fire.online,
            fire.total,
            fire.threshold,
            fire.site,
        )
