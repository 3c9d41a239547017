-- The page anchors' basis (sensor_set_version, 0006) was bumped by statement triggers on
-- insert, delete and updates of retired_at, which fire for statements that change no row: an
-- idempotent POST /sensors (its restore and its insert), a DELETE of a sensor already retired.
-- Each marked the anchors stale, and a million-sensor fleet rebuilds them in ~1 s, so a
-- provisioning sync sending its whole list every minute kept them stale and the database busy.
-- The fleet counters' trigger already knows what a statement changed: it bumps the basis when
-- rows were inserted or deleted, or sensors retired or restored (a statement never does both
-- at once), and the three triggers go. TRUNCATE keeps its own (no transition table there),
-- which now also empties the counters: they kept counting the sensors a TRUNCATE removed.
-- The function is restated whole (0015's), with `changed` added.
CREATE OR REPLACE FUNCTION fleet_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    retired_delta bigint;
    changed boolean;  -- the statement added, removed, retired or restored a sensor
BEGIN
    -- A transition table exists only for the events its trigger declares, hence the branches.
    -- One pass over the rows gives both counters; a heartbeat batch (no retired rows) writes
    -- neither unless a status or version changed.
    IF TG_OP IN ('INSERT', 'DELETE') THEN
        -- The transition table's name is the one thing the two differ in, hence EXECUTE
        -- (planned each time: these triggers run per provisioning statement, not heartbeat).
        EXECUTE format($q$
            WITH delta AS (
                SELECT retired_at IS NOT NULL AS gone,
                       sensor_status(online, last_seen_at) AS status,
                       coalesce(version, '') AS version, coalesce(site, '') AS site,
                       %s count(*)::int AS d
                FROM %I GROUP BY 1, 2, 3, 4
            ), counted AS (
                SELECT fleet_count_add(array_agg(status) FILTER (WHERE NOT gone),
                                       array_agg(version) FILTER (WHERE NOT gone),
                                       array_agg(site) FILTER (WHERE NOT gone),
                                       array_agg(d) FILTER (WHERE NOT gone)),
                       coalesce(sum(d) FILTER (WHERE gone), 0) AS retired
                FROM delta
            )
            SELECT retired, EXISTS (SELECT FROM delta) FROM counted $q$,
            CASE TG_OP WHEN 'INSERT' THEN '' ELSE '-' END,
            CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
        INTO STRICT retired_delta, changed;
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
        SELECT counted.retired, counted.retired <> 0 INTO retired_delta, changed FROM counted;
    END IF;
    IF retired_delta <> 0 THEN
        UPDATE retired_count SET n = n + retired_delta;
    END IF;
    IF changed THEN
        UPDATE sensor_set_version SET n = n + 1;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER sensor_set_insert ON sensor;
DROP TRIGGER sensor_set_delete ON sensor;
DROP TRIGGER sensor_set_retire ON sensor;

CREATE FUNCTION sensor_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM fleet_count;
    UPDATE retired_count SET n = 0;
    UPDATE sensor_set_version SET n = n + 1;
    RETURN NULL;
END $$;
DROP TRIGGER sensor_set_truncate ON sensor;
DROP FUNCTION sensor_set_changed();
CREATE TRIGGER sensor_truncated AFTER TRUNCATE ON sensor
    FOR EACH STATEMENT EXECUTE FUNCTION sensor_truncated();
