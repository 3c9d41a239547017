-- droneshield schema, version 1.
-- sensor is updated on every heartbeat: only id, serial and version are indexed, so a heartbeat
-- (online, last_seen_at, status_changed_at) is a HOT update. Do not index last_seen_at.

CREATE TABLE software (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version     text NOT NULL UNIQUE,            -- canonical semver, no leading v
    filename    text NOT NULL,                   -- as uploaded
    path        text NOT NULL,                   -- relative to the storage directory
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    uploaded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sensor (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial            text NOT NULL UNIQUE
                      CHECK (serial ~ '^[\x20-\x7e]{1,128}$'),
    version           text REFERENCES software (version) ON UPDATE CASCADE ON DELETE SET NULL,
    online            boolean NOT NULL DEFAULT false,
    last_seen_at      timestamptz,               -- NULL: never reported
    status_changed_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT online OR last_seen_at IS NOT NULL)
) WITH (fillfactor = 80);                        -- room on each page for HOT updates

CREATE INDEX sensor_version_serial ON sensor (version, serial);

CREATE TABLE sensor_event (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id bigint NOT NULL REFERENCES sensor (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL CHECK (kind IN ('online', 'offline', 'version')),
    old       text,
    new       text
);

CREATE INDEX sensor_event_sensor_at ON sensor_event (sensor_id, at DESC);
CREATE INDEX sensor_event_at ON sensor_event (at);

-- Fleet totals per (status, version), maintained by statement-level triggers so that
-- /summary and page totals never count a million rows.
CREATE TABLE fleet_count (
    status  text NOT NULL CHECK (status IN ('never', 'online', 'offline')),
    version text NOT NULL DEFAULT '',            -- '' for no stored version
    n       bigint NOT NULL,
    PRIMARY KEY (status, version)
);

CREATE FUNCTION sensor_status(online boolean, last_seen_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN last_seen_at IS NULL THEN 'never' WHEN online THEN 'online' ELSE 'offline' END;

-- Adds signed row counts per (status, version). Only net changes are written (a heartbeat batch
-- that changes no status or version writes nothing), in key order so that concurrent writers lock
-- counter rows in the same order.
CREATE FUNCTION fleet_count_add(statuses text[], versions text[], deltas int[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO fleet_count (status, version, n)
    SELECT s, v, sum(d) FROM unnest(statuses, versions, deltas) AS t(s, v, d)
    GROUP BY s, v HAVING sum(d) <> 0 ORDER BY s, v
    ON CONFLICT (status, version) DO UPDATE SET n = fleet_count.n + excluded.n
$$;

CREATE FUNCTION fleet_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A transition table exists only for the events its trigger declares, hence the branches.
    IF TG_OP = 'INSERT' THEN
        PERFORM fleet_count_add(array_agg(sensor_status(online, last_seen_at)),
                                array_agg(coalesce(version, '')), array_agg(1))
        FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM fleet_count_add(array_agg(sensor_status(online, last_seen_at)),
                                array_agg(coalesce(version, '')), array_agg(-1))
        FROM old_rows;
    ELSE
        PERFORM fleet_count_add(array_agg(status), array_agg(version), array_agg(d))
        FROM (
            SELECT sensor_status(online, last_seen_at) AS status,
                   coalesce(version, '') AS version, -1 AS d FROM old_rows
            UNION ALL
            SELECT sensor_status(online, last_seen_at), coalesce(version, ''), 1 FROM new_rows
        ) AS delta;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sensor_count_insert AFTER INSERT ON sensor
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet_count_apply();
CREATE TRIGGER sensor_count_delete AFTER DELETE ON sensor
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet_count_apply();
CREATE TRIGGER sensor_count_update AFTER UPDATE ON sensor
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_count_apply();

-- Other instances learn about new releases (and the hub about them) through this channel.
CREATE FUNCTION software_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('droneshield_software', NEW.version);
    RETURN NULL;
END $$;

CREATE TRIGGER software_added AFTER INSERT ON software
    FOR EACH ROW EXECUTE FUNCTION software_notify();
