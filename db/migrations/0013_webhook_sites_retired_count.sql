-- Sites reach webhooks, and retired sensors are counted.
--
-- A webhook's `site` filter (column of 0009, refused by the API until sensors had sites) now
-- selects the events of that site's sensors, and its `fleet.online_below` watches that site's
-- online share. Sensor events name the sensor's site.
--
-- `retired_count` is the number of retired sensors, maintained by the same statement-level
-- trigger as `fleet_count` (which leaves retired sensors out), so the `droneshield_sensors`
-- gauge gives retired sensors without counting rows per scrape.

DROP FUNCTION webhook_sensor(text, text, text, timestamptz, timestamptz);
CREATE FUNCTION webhook_sensor(serial text, version text, status text, site text,
                               last_seen_at timestamptz, status_changed_at timestamptz)
RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object('serial', serial, 'version', 'v' || version, 'status', status,
                          'site', site, 'lastSeenAt', last_seen_at,
                          'statusChangedAt', status_changed_at);

-- One row: retirements are an operator's writes, rare enough to share a counter row.
CREATE TABLE retired_count (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    n   bigint NOT NULL
);
INSERT INTO retired_count (n) SELECT count(*) FROM sensor WHERE retired_at IS NOT NULL;

CREATE OR REPLACE FUNCTION fleet_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    retired_delta bigint;
BEGIN
    -- A transition table exists only for the events its trigger declares, hence the branches.
    -- One pass over the rows gives both counters; a heartbeat batch (no retired rows) writes
    -- neither unless a status or version changed.
    IF TG_OP = 'INSERT' THEN
        PERFORM fleet_count_add(array_agg(sensor_status(online, last_seen_at)),
                                array_agg(coalesce(version, '')), array_agg(coalesce(site, '')),
                                array_agg(1))
        FROM new_rows WHERE retired_at IS NULL;
        SELECT count(*) INTO retired_delta FROM new_rows WHERE retired_at IS NOT NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM fleet_count_add(array_agg(sensor_status(online, last_seen_at)),
                                array_agg(coalesce(version, '')), array_agg(coalesce(site, '')),
                                array_agg(-1))
        FROM old_rows WHERE retired_at IS NULL;
        SELECT -count(*) INTO retired_delta FROM old_rows WHERE retired_at IS NOT NULL;
    ELSE
        WITH delta AS (
            SELECT retired_at IS NOT NULL AS gone, sensor_status(online, last_seen_at) AS status,
                   coalesce(version, '') AS version, coalesce(site, '') AS site, -1 AS d
            FROM old_rows
            UNION ALL
            SELECT retired_at IS NOT NULL, sensor_status(online, last_seen_at),
                   coalesce(version, ''), coalesce(site, ''), 1
            FROM new_rows
        ), counted AS (
            SELECT fleet_count_add(array_agg(status) FILTER (WHERE NOT gone),
                                   array_agg(version) FILTER (WHERE NOT gone),
                                   array_agg(site) FILTER (WHERE NOT gone),
                                   array_agg(d) FILTER (WHERE NOT gone)),
                   coalesce(sum(d) FILTER (WHERE gone), 0) AS retired
            FROM delta
        )
        SELECT counted.retired INTO retired_delta FROM counted;
    END IF;
    IF retired_delta <> 0 THEN
        UPDATE retired_count SET n = n + retired_delta;
    END IF;
    RETURN NULL;
END $$;
