-- Sensors as provisioned objects: a site and a label, retirement, per-site totals, sort keys
-- and search. Heartbeats stay HOT updates: every index added here covers columns a heartbeat
-- leaves unchanged (site, label, retired_at, status_changed_at and online change only on a
-- transition or an operator's write; seen_key is stored, and constant while a sensor is online).

ALTER TABLE sensor
    ADD COLUMN site text CHECK (octet_length(site) BETWEEN 1 AND 128),
    ADD COLUMN label text CHECK (octet_length(label) BETWEEN 1 AND 256),
    ADD COLUMN retired_at timestamptz,
    -- The sort key of `sort=last_seen_at`. last_seen_at itself changes on every heartbeat, so an
    -- index on it (or on an expression of it) would make every heartbeat a non-HOT update
    -- (35-50 % of heartbeat throughput). Online sensors all reported within offline_after and
    -- share the top key; a silent sensor's last_seen_at is frozen and is its key; never-seen
    -- sensors sort last. For an online sensor the value stays 'infinity', so a heartbeat
    -- writes an unchanged value and stays HOT.
    ADD COLUMN seen_key timestamptz GENERATED ALWAYS AS (
        CASE WHEN online THEN 'infinity'::timestamptz
             ELSE coalesce(last_seen_at, '-infinity'::timestamptz) END
    ) STORED;

-- Byte order is the column's own collation: the unique index serves keyset pages and lookups,
-- and the second serial index (0002) goes, one index less for every provisioned sensor.
ALTER TABLE sensor ALTER COLUMN serial TYPE text COLLATE "C";
DROP INDEX sensor_serial_bytes;

-- Semver precedence as text: each numeric part prefixed by its length (so 10 sorts after 9),
-- a release after its pre-releases ('~' sorts after every pre-release character). Pre-release
-- identifiers compare as text. '' (no stored version) sorts first.
CREATE FUNCTION version_sort_key(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN (
    SELECT lpad(length(m[1])::text, 3, '0') || m[1] || lpad(length(m[2])::text, 3, '0') || m[2]
           || lpad(length(m[3])::text, 3, '0') || m[3] || coalesce('-' || m[4], '~')
    FROM regexp_match(v, '^(\d+)\.(\d+)\.(\d+)(?:-([^+]*))?') AS m
);

CREATE INDEX sensor_site_serial ON sensor (site, serial);
CREATE INDEX sensor_changed_serial ON sensor
    ((coalesce(status_changed_at, '-infinity'::timestamptz)), serial);
CREATE INDEX sensor_seen_serial ON sensor (seen_key, serial);
DROP INDEX sensor_version_serial;
CREATE INDEX sensor_version_serial ON sensor ((coalesce(version_sort_key(version), '')), serial);
CREATE INDEX sensor_version ON sensor (version);  -- version filters and release deletes
CREATE INDEX sensor_retired_serial ON sensor (serial) WHERE retired_at IS NOT NULL;

-- Substring search (`q`) on serial and label. pg_trgm is in PostgreSQL's contrib, which
-- Debian's and the official images ship and the embedded server's wheel does not: without
-- it search is a scan, bounded by the page's LIMIT and the count's cap.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX sensor_serial_trgm ON sensor USING gin (serial gin_trgm_ops);
        CREATE INDEX sensor_label_trgm ON sensor USING gin (label gin_trgm_ops);
    END IF;
END $$;

ALTER TABLE sensor_event DROP CONSTRAINT sensor_event_kind_check,
    ADD CONSTRAINT sensor_event_kind_check
        CHECK (kind IN ('online', 'offline', 'version', 'retired', 'restored'));

-- Totals per site as well: one counter row per (status, version, site), so /sites, /summary
-- and filtered page totals all read maintained counters. Retired sensors are not counted.
ALTER TABLE fleet_count ADD COLUMN site text NOT NULL DEFAULT '',
    DROP CONSTRAINT fleet_count_pkey,
    ADD PRIMARY KEY (status, version, site);

DROP FUNCTION fleet_count_add(text[], text[], int[]) CASCADE;
CREATE FUNCTION fleet_count_add(statuses text[], versions text[], sites text[], deltas int[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO fleet_count (status, version, site, n)
    SELECT s, v, st, sum(d) FROM unnest(statuses, versions, sites, deltas) AS t(s, v, st, d)
    GROUP BY s, v, st HAVING sum(d) <> 0 ORDER BY s, v, st
    ON CONFLICT (status, version, site) DO UPDATE SET n = fleet_count.n + excluded.n
$$;

CREATE OR REPLACE FUNCTION fleet_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A transition table exists only for the events its trigger declares, hence the branches.
    IF TG_OP = 'INSERT' THEN
        PERFORM fleet_count_add(array_agg(sensor_status(online, last_seen_at)),
                                array_agg(coalesce(version, '')), array_agg(coalesce(site, '')),
                                array_agg(1))
        FROM new_rows WHERE retired_at IS NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM fleet_count_add(array_agg(sensor_status(online, last_seen_at)),
                                array_agg(coalesce(version, '')), array_agg(coalesce(site, '')),
                                array_agg(-1))
        FROM old_rows WHERE retired_at IS NULL;
    ELSE
        PERFORM fleet_count_add(array_agg(status), array_agg(version), array_agg(site),
                                array_agg(d))
        FROM (
            SELECT sensor_status(online, last_seen_at) AS status,
                   coalesce(version, '') AS version, coalesce(site, '') AS site, -1 AS d
            FROM old_rows WHERE retired_at IS NULL
            UNION ALL
            SELECT sensor_status(online, last_seen_at), coalesce(version, ''),
                   coalesce(site, ''), 1
            FROM new_rows WHERE retired_at IS NULL
        ) AS delta;
    END IF;
    RETURN NULL;
END $$;

-- Retiring or restoring changes the set of listed sensors, as inserts and deletes do (page
-- anchors are built from listed sensors only).
CREATE TRIGGER sensor_set_retire AFTER UPDATE OF retired_at ON sensor
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_set_changed();
