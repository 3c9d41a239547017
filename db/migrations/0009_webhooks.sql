-- Webhooks and their transactional outbox.
-- The statements that change what a webhook announces (the report batch, the offline expiry, the
-- upload) insert one outbox row per (webhook, event) in the same statement or transaction, so an
-- event exists exactly when its change committed. The dispatcher leases a webhook (one daemon
-- sends to an endpoint at a time, in id order) and marks rows delivered or failed.

CREATE TABLE webhook (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL,
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    secret          text NOT NULL,
    site            text,                           -- filter: only this site's sensors
    serials         text[],                         -- filter: only these sensors
    online_below    float8 CHECK (online_below > 0 AND online_below <= 1),
    below           boolean NOT NULL DEFAULT false, -- fleet.online_below fired, not yet cleared
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- dispatch state: who sends now, and when the next attempt may start after failures
    lease_owner     text,
    lease_until     timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    failures        int NOT NULL DEFAULT 0,         -- consecutive failed attempts
    last_error      text
);

CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the event id sent
    webhook_id  bigint NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL,                   -- the event's subject: {"sensor": {…}}, …
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    int NOT NULL DEFAULT 0,
    last_error  text,
    done_at     timestamptz
);

CREATE INDEX outbox_pending ON outbox (webhook_id, id) WHERE state = 'pending';
CREATE INDEX outbox_recent ON outbox (webhook_id, id DESC);
CREATE INDEX outbox_done ON outbox (done_at) WHERE state <> 'pending';

-- Versions reported before any release of them was uploaded, from the first report seen while a
-- webhook asked for `version.unreleased_reported`.
CREATE TABLE webhook_unreleased_seen (
    version           text PRIMARY KEY,
    first_reported_at timestamptz NOT NULL DEFAULT now()
);

-- A sensor as webhook events show it (the API's camelCase, versions shown as v1.2.3).
CREATE FUNCTION webhook_sensor(serial text, version text, status text,
                               last_seen_at timestamptz, status_changed_at timestamptz)
RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object('serial', serial, 'version', 'v' || version, 'status', status,
                          'lastSeenAt', last_seen_at, 'statusChangedAt', status_changed_at);

-- The dispatcher's read: a webhook's next pending events after `after`, in id order. Always an
-- ordered walk of outbox_pending that stops at `n`: right after a burst (100,000 events before
-- autovacuum has analysed them) the planner would otherwise estimate a handful of rows and
-- bitmap-scan and sort them all for every batch.
CREATE FUNCTION outbox_due(webhook bigint, after bigint, n int)
RETURNS TABLE (id bigint, type text, occurred_at timestamptz, body jsonb, age float8)
LANGUAGE sql STABLE SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
AS $$
    SELECT o.id, o.type, o.occurred_at, o.body, extract(epoch FROM now() - o.created_at)::float8
    FROM outbox o
    WHERE o.webhook_id = webhook AND o.state = 'pending' AND o.id > after
    ORDER BY o.id
    LIMIT n
$$;
