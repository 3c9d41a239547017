-- Fleet history: the fleet's totals once a minute, for charts of how it looked an hour or a
-- month ago. Every daemon samples; the minute is the key, so the first insert of a minute wins
-- (ON CONFLICT DO NOTHING) and the table holds one row per minute however many daemons run.
-- Rows older than the retention setting are deleted in small batches by the samplers.
CREATE TABLE fleet_history (
    minute   timestamptz PRIMARY KEY,     -- start of the minute sampled (UTC-aligned)
    online   bigint NOT NULL,
    offline  bigint NOT NULL,
    never    bigint NOT NULL,
    versions jsonb NOT NULL,              -- {"1.2.3": sensors, "": sensors with no stored version}
    sites    jsonb NOT NULL               -- {"north": [online, offline, never], "": no site}
);
